// `invp index remove|compact`: editing an index directory in place (search/index_edit.h).
#include "common.h"

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/search/filter.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_edit.h>

#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

namespace invp::app {
namespace {

struct RemoveArgs {
  std::string index, ids, filter, dedup_report;
  bool dry_run = false;
};

// The ids a remove asks for, from exactly one of its three sources.
std::vector<int64_t> ids_to_remove(const RemoveArgs& a) {
  if (!a.ids.empty()) return search::read_id_list(a.ids);
  if (!a.dedup_report.empty()) return search::dedup_report_duplicates(a.dedup_report);
  const auto f = search::Filter::parse(a.filter);
  search::IndexHandle h(a.index);
  return search::select_ids(h, f).members();
}

void add_remove(CLI::App* idx) {
  auto a = std::make_shared<RemoveArgs>();
  auto* c = idx->add_subcommand(
      "remove",
      "Remove items from an index as a new generation (a killed run loses nothing). Flat and IVF "
      "indexes drop the vectors; HNSW and on-disk indexes keep them as tombstones that every "
      "search skips until invp index compact. Ids of the remaining items never change, and later "
      "adds continue after the largest id ever given.");
  c->add_option("-i,--index", a->index, "Index directory")->required();
  auto* ids = c->add_option("--ids", a->ids, "File of ids to remove (numbers separated by spaces, commas or lines; # comments)");
  auto* filter = c->add_option("--filter", a->filter, "Remove the items this filter admits (same grammar as query --filter)")
                     ->check(filter_expression());
  auto* report = c->add_option("--dedup-report", a->dedup_report,
                               "Remove the duplicates of an invp --json dedup report: every item of each group but its representative");
  ids->excludes(filter)->excludes(report);
  filter->excludes(report);
  c->add_flag("--dry-run", a->dry_run, "Say how many items would go, change nothing");
  c->callback([a] {
    globals().action = [a] {
      if (a->ids.empty() && a->filter.empty() && a->dedup_report.empty())
        throw CLI::ValidationError("index remove", "give one of --ids FILE, --filter EXPR or --dedup-report FILE");
      auto ids = ids_to_remove(*a);
      if (a->dry_run) {
        search::IndexHandle h(a->index);
        int64_t present = 0;
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        for (int64_t id : ids) present += h.row_of(id) >= 0;
        if (globals().json)
          std::cout << nlohmann::json{{"index", a->index}, {"would_remove", present}, {"missing", int64_t(ids.size()) - present}}.dump() << "\n";
        else
          std::cout << "would remove " << present << " of " << h.info().size << " items from " << a->index << "\n";
        return;
      }
      auto r = search::remove_from_index(a->index, ids);
      if (globals().json) {
        std::cout << nlohmann::json{{"index", a->index}, {"removed", r.removed}, {"missing", r.missing}, {"size", r.size},
                                    {"in_place", r.in_place}, {"tombstones", r.tombstones}, {"generation", r.generation},
                                    {"seconds", r.seconds}}.dump() << "\n";
        return;
      }
      std::cout << "removed " << r.removed << " items from " << a->index << ": " << r.size << " left";
      if (r.missing) std::cout << " (" << r.missing << " of the ids asked for are not in the index)";
      std::cout << "\n";
      if (r.tombstones) log::info(std::to_string(r.tombstones) + " tombstones are skipped by every search; invp index compact drops them");
    };
  });
}

void add_compact(CLI::App* idx) {
  auto dir = std::make_shared<std::string>();
  auto* c = idx->add_subcommand(
      "compact",
      "Rebuild the FAISS index of a directory without the tombstones of removed items (HNSW), "
      "from the vectors its metadata holds, as a new generation.");
  c->add_option("-i,--index", *dir, "Index directory")->required();
  c->callback([dir] {
    globals().action = [dir] {
      auto r = search::compact_index(*dir);
      if (globals().json)
        std::cout << nlohmann::json{{"index", *dir}, {"dropped", r.dropped}, {"size", r.size},
                                    {"generation", r.generation}, {"seconds", r.seconds}}.dump() << "\n";
      else if (r.dropped == 0)
        std::cout << *dir << " has no tombstones: nothing to compact\n";
      else
        std::cout << "compacted " << *dir << ": dropped " << r.dropped << " tombstones, " << r.size << " items\n";
    };
  });
}

}  // namespace

void add_index_edit_commands(CLI::App* idx) {
  add_remove(idx);
  add_compact(idx);
}

}  // namespace invp::app
