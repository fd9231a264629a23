#include "pkg/base/log.h"

#include "gtest/gtest.h"

namespace ferry::base {
namespace {

// 2026-11-22T00:00:01.500Z
constexpr int64_t kTime = 1795305601'500'000'000;

TEST(LogTest, TextLineIsLogfmt) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kTime, LogLevel::kWarn, "accept paused",
                          {{"rule", "web"}, {"error", "Too many open files"}, {"n", 3}}),
            "ts=2026-11-22T00:00:01.500Z level=warn msg=\"accept paused\" rule=web "
            "error=\"Too many open files\" n=3\n");
}

TEST(LogTest, JsonLineEscapes) {
  EXPECT_EQ(FormatLogLine(LogFormat::kJson, kTime, LogLevel::kInfo, "a\"b",
                          {{"path", "x\\y\n"}}),
            "{\"ts\":\"2026-11-22T00:00:01.500Z\",\"level\":\"info\",\"msg\":\"a\\\"b\","
            "\"path\":\"x\\\\y\\n\"}\n");
}

TEST(LogTest, ParsesLevelsAndFormats) {
  LogLevel level;
  LogFormat format;
  EXPECT_TRUE(ParseLogLevel("DEBUG", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("loud", &level));
  EXPECT_TRUE(ParseLogFormat("json", &format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("xml", &format));
}

}  // namespace
}  // namespace ferry::base
