// Retrieval metrics against values worked out by hand.
#include <invp/core/error.h>
#include <invp/eval/retrieval.h>

#include <gtest/gtest.h>

using namespace invp::eval;

TEST(Retrieval, PrecisionAtK) {
  std::vector<int32_t> ranked{1, 2, 1, 1, 3};
  EXPECT_DOUBLE_EQ(precision_at_k(ranked, 1, 1), 1.0);
  EXPECT_DOUBLE_EQ(precision_at_k(ranked, 1, 2), 0.5);
  EXPECT_DOUBLE_EQ(precision_at_k(ranked, 1, 5), 0.6);
  EXPECT_DOUBLE_EQ(precision_at_k(ranked, 3, 5), 0.2);
  EXPECT_DOUBLE_EQ(precision_at_k(ranked, -1, 5), 0.0);  // unlabelled query: nothing relevant
  EXPECT_THROW(precision_at_k(ranked, 1, 6), invp::Error);
  EXPECT_THROW(precision_at_k(ranked, 1, 0), invp::Error);
}

TEST(Retrieval, AveragePrecisionByHand) {
  // Relevant at ranks 1, 3, 4: precisions 1/1, 2/3, 3/4; 10 relevant in the collection,
  // k = 5 -> divide by min(5, 10) = 5.
  std::vector<int32_t> ranked{1, 2, 1, 1, 3};
  EXPECT_NEAR(average_precision_at_k(ranked, 1, 5, 10), (1.0 + 2.0 / 3 + 0.75) / 5, 1e-12);
  // Only 3 relevant in the collection: a perfect list of them would score 1.
  EXPECT_NEAR(average_precision_at_k(ranked, 1, 5, 3), (1.0 + 2.0 / 3 + 0.75) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(average_precision_at_k({4, 4, 4}, 4, 3, 3), 1.0);
  EXPECT_DOUBLE_EQ(average_precision_at_k({5, 5, 4}, 4, 3, 3), 1.0 / 3 / 3);
  EXPECT_DOUBLE_EQ(average_precision_at_k({4, 4}, 4, 2, 0), 0.0);
  // A shorter list than k (fewer hits found) is scored over what is there.
  EXPECT_NEAR(average_precision_at_k({2, 4}, 4, 10, 4), 0.5 / 4, 1e-12);
}

TEST(Retrieval, MeterAveragesAndSkipsUnlabelled) {
  RetrievalMeter m(2);
  m.add({1, 1, 0}, 1, 2);   // p1 1, p2 1, ap 1
  m.add({0, 1, 1}, 1, 2);   // p1 0, p2 .5, ap (1/2)/2
  m.add({0, 0}, -1, 5);     // not evaluated
  auto r = m.result();
  EXPECT_EQ(r.evaluated, 2);
  EXPECT_DOUBLE_EQ(r.precision_at_1, 0.5);
  EXPECT_DOUBLE_EQ(r.precision_at_k, 0.75);
  EXPECT_DOUBLE_EQ(r.map_at_k, (1.0 + 0.25) / 2);
}
