// `invp embed` and `invp index build|add|info`.
#include "common.h"

#include <invp/core/cpu_features.h>
#include <invp/core/error.h>
#include <invp/core/launch.h>
#include <invp/core/log.h>
#include <invp/core/memory.h>
#include <invp/data/dataset.h>
#include <invp/search/embedder.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_edit.h>
#include <invp/store/embedding_store.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <tuple>
#include <iostream>

namespace invp::app {
namespace {
std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// --shard i/N, or this rank's shard under a launcher, or (0, 1) for the whole source.
std::pair<int, int> parse_shard(std::string& text) {
  if (text.empty()) {
    auto env = rank_env_from_environment();
    if (env.distributed()) text = std::to_string(env.rank) + "/" + std::to_string(env.world);
    else return {0, 1};
  }
  int i = -1, n = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%d/%d%c", &i, &n, &tail) != 2 || n < 1 || i < 0 || i >= n)
    throw CLI::ValidationError("--shard", "'" + text + "' is not i/N with 0 <= i < N");
  return {i, n};
}

void add_embed(CLI::App& app) {
  struct Args {
    std::string model, data, out, device = "cpu", precision = "fp32", shard, features = "auto";
    int nproc = 1;
    search::EmbedOptions opt;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "embed",
      "Embed an image collection with a trained model into HDF5 (/embeddings N x D float32, "
      "L2-normalised; /ids, /paths, /labels, /categories). Streams in chunks; a killed run "
      "continues from its last complete chunk when rerun.");
  c->add_option("-m,--model", a->model, "model.pt written by invp train (model.json beside it)")->required();
  c->add_option("-d,--data", a->data, "SOURCE to embed (IDX, CIFAR, folder, list, '-')")->required();
  c->add_option("-o,--out", a->out, "Output embeddings file (.h5)")->required();
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  c->add_option("--precision", a->precision,
                "fp32, bf16 (cpu: the backbone in bfloat16, float32 head and output: faster where the CPU "
                "has bf16 instructions, rows close to fp32's but not equal, so a few near-tied neighbours "
                "swap; BENCHMARKS.md measures both) or auto (bf16 where the CPU has them and it pays, else "
                "fp32). The file's 'precision' attribute records the choice made")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  c->add_option("--features", a->features,
                "head: the model's output, what training compares; backbone: the pooled features before "
                "the projection head, wider, what self-supervised work usually evaluates downstream; auto: "
                "what the model's training chose (train --embed-features; model.json \"embed\"). Recorded in "
                "the file; an index built from it embeds image queries the same way")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "head", "backbone"}));
  c->add_option("--batch-size", a->opt.batch_size, "Images per forward pass")->capture_default_str();
  c->add_option("--workers", a->opt.workers, "Decode threads (count against --threads)")->capture_default_str();
  c->add_option("--chunk-rows", a->opt.chunk_rows, "Rows per resumable chunk")->capture_default_str();
  c->add_option("--shard", a->shard,
                "i/N: embed only the i-th (0-based) of N contiguous slices of SOURCE, ids still the items' "
                "positions in the whole source, into OUT with '.part-i-of-N' before its extension (or "
                "'{shard}' in OUT replaced). Under torchrun/srun (RANK/WORLD_SIZE) each rank takes its own "
                "shard. index build/add take the parts together");
  c->add_option("--nproc", a->nproc,
                "Embed as N shards in N local processes (the thread budget split between them), each "
                "writing its part as --shard does")
      ->check(between(1, 1024))->capture_default_str();
  c->callback([a] {
    globals().action = [a] {
      if (!a->shard.empty() && a->nproc > 1)
        throw CLI::ValidationError("embed", "--shard names one part; --nproc runs them all: give one of them");
      if (int rc = relaunch_as_ranks(a->nproc); rc >= 0) {
        std::fflush(stdout);
        std::fflush(stderr);
        std::_Exit(rc);
      }
      std::tie(a->opt.shard, a->opt.shards) = parse_shard(a->shard);
      a->out = search::shard_path(a->out, a->opt.shard, a->opt.shards);
      search::Embedder e(a->model, a->device, search::Embedder::output_of(a->features), a->precision);
      auto r = search::embed_to_file(e, a->data, a->out, a->opt);
      if (globals().json) {
        std::cout << nlohmann::json{{"out", a->out}, {"rows", r.rows}, {"resumed_rows", r.resumed_rows},
                                    {"skipped_bad", r.skipped_bad}, {"seconds", r.seconds},
                                    {"images_per_second", r.images_per_second}, {"dim", e.dim()},
                                    {"precision", e.precision()}, {"features", e.features()}, {"shard", a->shard},
                                    {"model_hash", e.model_hash()}}
                         .dump()
                  << "\n";
      } else {
        std::cout << "wrote " << a->out << ": " << r.rows << " x " << e.dim() << " embeddings"
                  << (r.resumed_rows ? " (" + std::to_string(r.resumed_rows) + " resumed)" : "")
                  << (r.skipped_bad ? ", " + std::to_string(r.skipped_bad) + " bad items skipped" : "")
                  << ", " << fmt("%.0f", r.images_per_second) << " img/s (" << e.precision() << ")\n";
      }
    };
  });
}

nlohmann::json info_json(const std::string& dir, const search::IndexInfo& i) {
  return {{"index", dir}, {"recipe", i.recipe.name}, {"factory", i.factory}, {"reason", i.choice_reason},
          {"size", i.size}, {"dim", i.dim}, {"search_params", i.search_params},
          {"recall_at_k", i.recall}, {"k", i.tuned_k}, {"queries_per_second", i.queries_per_second},
          {"build_seconds", i.build_seconds}, {"has_model", i.has_model}, {"generation", i.generation},
          {"precision", i.precision}, {"kind", i.kind}, {"on_disk", !i.ivfdata.empty()},
          {"rerank", i.rerank}, {"rerank_recall_at_k", i.rerank_recall}};
}

void print_info(const std::string& dir, const search::IndexInfo& i) {
  std::cout << "index      " << dir << "\n"
            << "recipe     " << i.recipe.name << " (" << i.factory << ")\n"
            << "why        " << i.choice_reason << "\n"
            << "items      " << i.size << " x " << i.dim << " (embedded in " << i.precision << ")\n"
            << "search     ";
  for (auto& [k, v] : i.search_params) std::cout << k << "=" << v << " ";
  std::cout << (i.search_params.empty() ? "(exact)" : "") << "\n"
            << "recall@" << i.tuned_k << "  " << fmt("%.3f", i.recall)
            << (i.rerank ? " (codes alone)" : " (target " + fmt("%.2f", i.target_recall) + ")") << "\n"
            << (i.rerank ? "rerank     " + std::to_string(i.rerank) + " candidates: recall@" + std::to_string(i.tuned_k) +
                               " " + fmt("%.3f", i.rerank_recall) + " (target " + fmt("%.2f", i.target_recall) + ")\n"
                         : "")
            << (i.ivfdata.empty() ? "" : "lists      " + i.ivfdata + " (on disk, memory-mapped)\n")
            << "speed      " << fmt("%.0f", i.queries_per_second) << " queries/s (one thread budget, batch)\n"
            << "model      " << (i.has_model ? "model.pt (query by image)" : "none (--id queries only)") << "\n";
}

void add_index(CLI::App& app) {
  auto* idx = app.add_subcommand("index", "Build, extend and describe FAISS indexes of embeddings");
  idx->require_subcommand(1);
  idx->preparse_callback([](size_t) { keep_large_blocks_mapped(); });  // they stream blocks of rows

  auto b = std::make_shared<search::BuildOptions>();
  auto bin = std::make_shared<std::vector<std::string>>();
  auto bout = std::make_shared<std::string>();
  auto* build = idx->add_subcommand(
      "build",
      "Build an index directory from embeddings.h5. --recipe auto picks Flat / HNSW / IVF / "
      "OPQ+IVF-PQ from N, D and --max-memory, then tunes nprobe/efSearch to --target-recall "
      "(recall@k against exact search on a held-out sample) and records it in index.json.");
  build->add_option("-e,--embeddings", *bin,
                    "Embeddings file from invp embed, or several: the parts of one source from embed --shard "
                    "(mismatched models and overlapping ids are refused)")->required();
  build->add_option("-o,--out", *bout, "Index directory to write")->required();
  build->add_option("-r,--recipe", b->recipe, "auto, flat, hnsw, ivf-flat, ivf-pq, or a recipe file (indexes/*.toml)")->capture_default_str();
  build->add_option("--max-memory", b->max_memory, "Memory budget for the index, e.g. 512M, 4G (0 = no limit)")
      ->transform(CLI::AsSizeValue(false));
  build->add_option("--target-recall", b->target_recall, "Recall@k to tune for")->capture_default_str()->check(between(0, 1));
  build->add_option("-k", b->k, "k of the recall target")->capture_default_str();
  build->add_option("--tune-queries", b->tune_queries, "Held-out queries used to tune")->capture_default_str();
  build->add_option("-m,--model", b->model_pt, "Model that made the embeddings (default: the one recorded in the file)");
  auto btrained = std::make_shared<std::string>();
  build->add_option("--trained", *btrained,
                    "Fill a slice: add the embeddings (one part of the source) to a copy of this trained index "
                    "directory (invp index train); merge the slices with invp index merge");
  build->add_flag("--on-disk", b->on_disk,
                  "IVF recipes: put the inverted lists in an .ivfdata file searched memory-mapped (auto does so "
                  "when even compressed codes exceed --max-memory), built in slices of --slice-rows");
  build->add_option("--slice-rows", b->slice_rows, "On-disk builds: vectors filled in memory at a time")
      ->capture_default_str()->check(at_least(1));
  build->add_option("--rerank", b->rerank,
                    "Re-rank this many candidates exactly from the vectors file on disk (for PQ codes; 0 = off); "
                    "nprobe is then tuned to --target-recall as re-ranked, so fewer lists are probed")
      ->capture_default_str()->check(at_least(0));
  build->callback([b, bin, bout, btrained] {
    globals().action = [b, bin, bout, btrained] {
      b->seed = globals().seed;
      if (!btrained->empty()) {
        auto i = search::fill_slice(*btrained, *bin, *bout);
        if (globals().json) std::cout << info_json(*bout, i).dump() << "\n";
        else std::cout << "slice " << *bout << ": " << i.size << " x " << i.dim << " (" << i.factory << ")\n";
        return;
      }
      auto r = search::build_index(*bin, *bout, *b);
      if (globals().json) std::cout << info_json(*bout, r.info).dump() << "\n";
      else print_info(*bout, r.info);
    };
  });

  auto adir = std::make_shared<std::string>();
  auto aemb = std::make_shared<std::vector<std::string>>();
  auto asrc = std::make_shared<std::string>();
  auto* add = idx->add_subcommand(
      "add",
      "Add images (embedded with the index's model, in the precision its embeddings were made "
      "in where this CPU can) or an embeddings file to an index without rebuilding it; new "
      "items get ids after the largest one.");
  add->add_option("-i,--index", *adir, "Index directory")->required();
  add->add_option("-e,--embeddings", *aemb,
                  "Embeddings file made with the index's model, or several parts of one source (embed --shard)");
  add->add_option("source", *asrc, "SOURCE of images to embed and add");
  auto alabels = std::make_shared<std::string>();
  add->add_option("--labels", *alabels,
                  "CSV of path,label lines labelling the new items: a category name (new names join the "
                  "index's categories) or a number; a line's path may be the tail of an item's path");
  add->callback([adir, aemb, asrc, alabels] {
    globals().action = [adir, aemb, asrc, alabels] {
      if (aemb->empty() == asrc->empty())
        throw CLI::ValidationError("index add", "give exactly one of --embeddings FILE or a SOURCE");
      store::Rows rows;
      std::string hash;
      if (!aemb->empty()) {
        store::EmbeddingReader r(aemb->front());
        if (!r.has_embeddings()) throw Error(aemb->front(), "holds no /embeddings");
        rows = search::read_parts(*aemb);
        hash = r.meta().model_hash;
        const auto index_info = search::read_index_info(*adir);
        if (r.meta().features != index_info.features)
          throw Error(aemb->front(), "holds " + r.meta().features + " features, the index " + index_info.features,
                      "embed with --features " + index_info.features);
        const auto have = index_info.precision;
        if (r.meta().precision != have)
          log::warn(aemb->front() + ": embedded in " + r.meta().precision + ", the index in " + have +
                    " (same model, so they mix; neighbours shift by that precision's rounding)");
      } else {
        search::IndexHandle h(*adir);
        // New rows in the precision the index's embeddings were made in, where this CPU can.
        const bool bf16 = h.info().precision == "bf16" && cpu_bf16() != CpuBf16::None;
        auto& e = h.embedder(bf16 ? "bf16" : "fp32");
        auto ds = data::open_dataset(*asrc, {e.channels(), false});
        auto f = search::embed_dataset_in_memory(e, ds);
        rows.embeddings = f.features;
        auto ids = f.ids.contiguous();
        auto lab = f.labels.to(torch::kInt32).contiguous();
        rows.ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
        rows.labels.assign(lab.data_ptr<int32_t>(), lab.data_ptr<int32_t>() + lab.numel());
        rows.paths = std::move(f.paths);
        hash = e.model_hash();
      }
      std::vector<std::string> categories;
      if (!alabels->empty()) {
        categories = search::IndexHandle(*adir).categories();
        const int64_t n = search::apply_label_csv(*alabels, rows, categories);
        log::info(*alabels + ": labelled " + std::to_string(n) + " of " + std::to_string(rows.size()) + " new items");
      }
      auto r = search::add_to_index(*adir, rows, hash, categories);
      if (globals().json)
        std::cout << nlohmann::json{{"index", *adir}, {"added", r.added}, {"first_id", r.first_id},
                                    {"size", r.size}, {"seconds", r.seconds}}.dump() << "\n";
      else
        std::cout << "added " << r.added << " items (ids " << r.first_id << ".."
                  << r.first_id + r.added - 1 << ") to " << *adir << ": " << r.size << " items\n";
    };
  });

  auto t = std::make_shared<search::TrainOptions>();
  auto tin = std::make_shared<std::string>(), tout = std::make_shared<std::string>();
  auto* train = idx->add_subcommand(
      "train",
      "Train an IVF index (coarse quantizer, OPQ/PQ) on a sample of embeddings and write it empty; "
      "fill it in slices with index build --trained, one per embeddings part, then index merge.");
  train->add_option("-e,--embeddings", *tin, "Sample embeddings file")->required();
  train->add_option("-o,--out", *tout, "Trained index directory to write")->required();
  train->add_option("-r,--recipe", t->recipe, "ivf-flat, ivf-pq or an IVF recipe file")->capture_default_str();
  train->add_option("--size", t->expected_n, "Vectors the whole index will hold (sets {nlist}; default: the sample's)");
  train->callback([t, tin, tout] {
    globals().action = [t, tin, tout] {
      t->seed = globals().seed;
      auto i = search::train_index(*tin, *tout, *t);
      if (globals().json) std::cout << info_json(*tout, i).dump() << "\n";
      else std::cout << "trained " << *tout << ": " << i.factory << " (" << i.dim << " dims)\n";
    };
  });

  auto m = std::make_shared<search::BuildOptions>();
  auto min = std::make_shared<std::vector<std::string>>();
  auto mout = std::make_shared<std::string>();
  auto* merge = idx->add_subcommand(
      "merge",
      "Merge slices filled from one trained index (refusing other trainings, models and overlapping ids) "
      "into one index directory, as a new generation committed last, and tune nprobe on the whole.");
  merge->add_option("slices", *min, "Slice directories from index build --trained")->required();
  merge->add_option("-o,--out", *mout, "Index directory to write")->required();
  merge->add_flag("--on-disk", m->on_disk, "Write the inverted lists to an .ivfdata file searched memory-mapped");
  merge->add_option("--target-recall", m->target_recall, "Recall@k to tune for")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  merge->add_option("-k", m->k, "k of the recall target")->capture_default_str();
  merge->add_option("--tune-queries", m->tune_queries, "Held-out queries used to tune")->capture_default_str();
  merge->add_option("--rerank", m->rerank, "Re-rank this many candidates exactly from the vectors file (0 = off); nprobe is then tuned to "
                    "--target-recall as re-ranked, so fewer lists are probed")
      ->capture_default_str()->check(at_least(0));
  merge->callback([m, min, mout] {
    globals().action = [m, min, mout] {
      m->seed = globals().seed;
      auto r = search::merge_slices(*min, *mout, *m);
      if (globals().json) std::cout << info_json(*mout, r.info).dump() << "\n";
      else print_info(*mout, r.info);
    };
  });

  auto idir = std::make_shared<std::string>();
  auto* info = idx->add_subcommand("info", "Describe an index directory (recipe, size, tuned recall and speed)");
  info->add_option("index", *idir, "Index directory")->required();
  info->callback([idir] {
    globals().action = [idir] {
      auto i = search::read_index_info(*idir);
      if (globals().json) std::cout << info_json(*idir, i).dump() << "\n";
      else print_info(*idir, i);
    };
  });
  add_index_edit_commands(idx);
  for (auto* sub : idx->get_subcommands({})) sub->fallthrough();
}
}  // namespace

void add_embed_commands(CLI::App& app) {
  add_embed(app);
  add_index(app);
}
}  // namespace invp::app
