//===- DeterminismTest.cpp - Same bits for any number of OpenMP threads ---===//
//
// Every reduction in the host kernels has one writer and one summation
// order, so results are bitwise identical whether 1, 2 or 3 threads run
// them. The problems are large enough for the kernels to go parallel.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <omp.h>

using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;

namespace {

class DeterminismTest : public KernelTest {
protected:
  void SetUp() override {
    KernelTest::SetUp();
    savedThreads = omp_get_max_threads();
  }
  void TearDown() override { omp_set_num_threads(savedThreads); }

  /// Runs `compute` with 1, 2 and 3 threads and expects identical results.
  template <typename Compute> void expectSameForAnyThreads(Compute compute) {
    omp_set_num_threads(1);
    auto single = compute();
    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_TRUE(compute() == single) << threads << " threads";
    }
  }

  int savedThreads = 1;
};

TEST_F(DeterminismTest, AttentionBackward) {
  std::int64_t batch = 2, seq = 48, heads = 4, kvHeads = 2, headDim = 16;
  std::vector<std::int32_t> cu = {0, 30, 31, 70, 96};
  std::int64_t qSize = batch * seq * heads * headDim;
  std::int64_t kvSize = batch * seq * kvHeads * headDim;
  auto q = randomVector<float>(qSize), k = randomVector<float>(kvSize),
       v = randomVector<float>(kvSize), dout = randomVector<float>(qSize);
  expectSameForAnyThreads([&] {
    auto out = poisoned<float>(qSize);
    auto lse = poisoned<float>(batch * heads * seq);
    auto grads = poisoned<float>(qSize + 2 * kvSize);
    attentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                     batch, seq, heads, kvHeads, headDim, 0.25, true, cu.data(),
                     5);
    attentionBackward(dout.data(), q.data(), k.data(), v.data(), out.data(),
                      lse.data(), grads.data(), grads.data() + qSize,
                      grads.data() + qSize + kvSize, batch, seq, heads, kvHeads,
                      headDim, 0.25, true, cu.data(), 5);
    grads.insert(grads.end(), out.begin(), out.end());
    grads.insert(grads.end(), lse.begin(), lse.end());
    return grads;
  });
}

TEST_F(DeterminismTest, ColumnReductions) {
  std::int64_t rows = 333, cols = 520;
  auto x = randomVector<float>(rows * cols);
  auto dy = randomVector<float>(rows * cols);
  expectSameForAnyThreads([&] {
    auto sums = poisoned<float>(3 * cols);
    columnSum(dy.data(), sums.data(), rows, cols);
    rmsNormWeightGrad(dy.data(), x.data(), sums.data() + cols, rows, cols,
                      1e-5);
    layerNormWeightGrad(dy.data(), x.data(), sums.data() + 2 * cols, rows, cols,
                        1e-5);
    return sums;
  });
}

TEST_F(DeterminismTest, EmbeddingGradAndLoss) {
  std::int64_t numIds = 2000, vocab = 300, dim = 32;
  auto dy = randomVector<float>(numIds * dim);
  auto ids = randomIds(numIds, vocab); // about 7 repeats per id
  auto logits = randomVector<float>(numIds * vocab, -5.0, 5.0);
  expectSameForAnyThreads([&] {
    auto dtable = poisoned<float>(vocab * dim);
    embeddingGrad(dy.data(), ids.data(), dtable.data(), numIds, vocab, dim);
    std::vector<double> result(dtable.begin(), dtable.end());
    result.push_back(
        crossEntropy(logits.data(), ids.data(), numIds, vocab, -100));
    result.push_back(sumOfSquares(logits.data(), numIds * vocab));
    return result;
  });
}

} // namespace
