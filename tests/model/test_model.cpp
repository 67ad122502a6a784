#include <invp/core/error.h>
#include <invp/model/model_io.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using invp::model::Encoder;
using invp::model::EncoderConfig;

namespace {
int64_t count_params(Encoder& net) {
  int64_t n = 0;
  for (auto& p : net->parameters()) n += p.numel();
  return n;
}
}  // namespace

TEST(Encoder, ResNet18SmallMatchesTorchvisionParameterCount) {
  EncoderConfig cfg;
  cfg.head = "linear";
  cfg.dim = 1000;
  cfg.stem = "imagenet";
  Encoder net(cfg);
  // torchvision resnet18 has 11,689,512 parameters with its 1000-way fc.
  EXPECT_EQ(count_params(net), 11689512);
  cfg.depth = 50;
  Encoder r50(cfg);
  EXPECT_EQ(count_params(r50), 25557032);  // torchvision resnet50
}

TEST(Encoder, ShapesForStemsChannelsAndHeads) {
  EncoderConfig cfg;
  cfg.width = 8;
  cfg.in_channels = 1;
  cfg.dim = 16;
  Encoder net(cfg);
  net->eval();
  auto z = net->forward(torch::randn({3, 1, 28, 28}));
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(net->features(torch::randn({2, 1, 28, 28})).size(1), 64);
  cfg.stem = "imagenet";
  cfg.in_channels = 3;
  cfg.depth = 34;
  Encoder big(cfg);
  big->eval();
  EXPECT_EQ(big->forward(torch::randn({1, 3, 64, 64})).size(1), 16);
  cfg.depth = 19;
  EXPECT_THROW(Encoder{cfg}, invp::Error);
}

// Why mlp-bn is the default head (docs/ALGORITHM-NOTES.md): at initialisation the reference
// Linear-ReLU-Linear head maps every input to nearly the same direction, while BatchNorm in
// the hidden layer spreads a training batch's embeddings.
TEST(Encoder, BatchNormHeadSpreadsEmbeddingsAtInit) {
  auto mean_cosine = [](const std::string& head) {
    torch::manual_seed(3);
    EncoderConfig cfg;
    cfg.width = 8;
    cfg.in_channels = 1;
    cfg.head = head;
    Encoder net(cfg);
    net->train();
    torch::NoGradGuard ng;
    auto z = torch::nn::functional::normalize(net->forward(torch::rand({64, 1, 28, 28})),
                                              torch::nn::functional::NormalizeFuncOptions().dim(1));
    return torch::mm(z, z.t()).mean().item<double>();
  };
  const double mlp = mean_cosine("mlp"), bn = mean_cosine("mlp-bn");
  EXPECT_GT(mlp, 0.9);
  EXPECT_LT(bn, 0.5);
  EncoderConfig bad;
  bad.head = "mlp-ln";
  EXPECT_THROW(Encoder{bad}, invp::Error);
}

TEST(ModelIO, RoundTripGivesIdenticalOutputsAndRejectsBadJson) {
  auto dir = fs::temp_directory_path() / ("invp_model_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  EncoderConfig cfg;
  cfg.width = 4;
  cfg.in_channels = 1;
  cfg.dim = 8;
  Encoder net(cfg);
  net->eval();
  invp::model::ModelInfo info;
  info.encoder = cfg;
  info.input_size = 28;
  info.resize = 28;
  info.config_hash = "abc";
  auto pt = (dir / "model.pt").string();
  invp::model::save_model(net, info, pt);
  invp::model::ModelInfo back;
  auto loaded = invp::model::load_model(pt, &back);
  auto x = torch::randn({2, 1, 28, 28});
  EXPECT_TRUE(torch::equal(net->forward(x), loaded->forward(x)));
  EXPECT_EQ(back.config_hash, "abc");
  EXPECT_EQ(back.input_size, 28);
  std::ofstream(dir / "model.json") << "{\"format_version\": 1}";
  EXPECT_THROW(invp::model::load_model(pt), invp::Error);
  fs::remove(dir / "model.json");
  EXPECT_THROW(invp::model::load_model(pt), invp::Error);
  fs::remove_all(dir);
}
