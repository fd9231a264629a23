// PlanReload and ListenerKey: which listeners a reload keeps, which it binds
// anew and which rules it leaves draining. Table tests, no sockets.

#include "pkg/proxy/rule_table.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::proxy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

RuleTable::Entry Entry(const std::string& name, const std::string& listen, bool draining = false) {
  auto rule = std::make_shared<Rule>();
  rule->name = name;
  rule->listen = *net::ParseHostPort(listen);
  AttachCounters(*rule, nullptr, 1);
  RuleTable::Entry e;
  e.key = *ListenerKey(*rule);
  e.rule = std::move(rule);
  e.draining = draining;
  return e;
}

RuleTable Table(std::vector<RuleTable::Entry> entries) {
  RuleTable t;
  t.entries = std::move(entries);
  return t;
}

TEST(ListenerKeyTest, SameAddressSameKeyWhateverTheSpellingButPortZeroIsTheRulesOwn) {
  EXPECT_EQ(Entry("a", "127.0.0.1:80").key, Entry("b", "127.0.0.1:80").key);
  EXPECT_EQ(Entry("a", "0.0.0.0:80").key, Entry("a", "0.0.0.0:0080").key);
  EXPECT_NE(Entry("a", "127.0.0.1:80").key, Entry("a", "127.0.0.1:81").key);
  EXPECT_NE(Entry("a", "127.0.0.1:0").key, Entry("b", "127.0.0.1:0").key);
  EXPECT_EQ(Entry("a", "127.0.0.1:0").key, Entry("a", "127.0.0.1:0").key);
  EXPECT_EQ(Entry("a", "unix:/run/a.sock").key, Entry("b", "unix:/run/a.sock").key);
}

TEST(PlanReloadTest, UnchangedAddressesKeepTheirListeners) {
  RuleTable running = Table({Entry("web", ":80"), Entry("db", "127.0.0.1:5432")});
  ReloadPlan plan = PlanReload(running, {Entry("db", "127.0.0.1:5432"), Entry("web", ":80")});
  EXPECT_THAT(plan.keep, ElementsAre(1, 0));
  EXPECT_THAT(plan.draining, IsEmpty());
}

TEST(PlanReloadTest, NewAndMovedRulesBindAndRemovedOnesDrain) {
  RuleTable running = Table({Entry("web", ":80"), Entry("old", ":81"), Entry("moves", ":82")});
  ReloadPlan plan =
      PlanReload(running, {Entry("web", ":80"), Entry("moves", ":83"), Entry("new", ":84")});
  EXPECT_THAT(plan.keep, ElementsAre(0, -1, -1));
  // "moves" keeps its name (and counters): it is not draining, its old
  // listener simply stops.
  EXPECT_THAT(plan.draining, ElementsAre(1));
}

TEST(PlanReloadTest, RenamedRuleKeepsTheListenerAndTheOldNameDrains) {
  RuleTable running = Table({Entry("before", ":80")});
  ReloadPlan plan = PlanReload(running, {Entry("after", ":80")});
  EXPECT_THAT(plan.keep, ElementsAre(0));
  EXPECT_THAT(plan.draining, ElementsAre(0));
}

TEST(PlanReloadTest, PortZeroListenersAreKeptOnlyByTheirOwnRule) {
  RuleTable running = Table({Entry("a", "127.0.0.1:0"), Entry("b", "127.0.0.1:0")});
  ReloadPlan plan = PlanReload(running, {Entry("b", "127.0.0.1:0"), Entry("c", "127.0.0.1:0")});
  EXPECT_THAT(plan.keep, ElementsAre(1, -1));
  EXPECT_THAT(plan.draining, ElementsAre(0));
}

TEST(PlanReloadTest, ADrainingListenerIsNeverReusedButItsNameCanComeBack) {
  RuleTable running = Table({Entry("web", ":80"), Entry("gone", ":81", /*draining=*/true),
                             Entry("still", ":82", /*draining=*/true)});
  // "gone" comes back on its old address: its old listener stopped for good,
  // so it binds anew; "still" stays draining.
  ReloadPlan plan = PlanReload(running, {Entry("web", ":80"), Entry("gone", ":81")});
  EXPECT_THAT(plan.keep, ElementsAre(0, -1));
  EXPECT_THAT(plan.draining, ElementsAre(2));
}

TEST(UniqueEndpointsTest, ATargetListedTwiceIsOneSeries) {
  auto rule = std::make_shared<Rule>();
  rule->name = "r";
  rule->endpoints = {*net::Address::ParseLiteral("10.0.0.1:80"),
                     *net::Address::ParseLiteral("10.0.0.2:80"),
                     *net::Address::ParseLiteral("10.0.0.1:80")};
  AttachCounters(*rule, nullptr, 2);
  std::vector<const EndpointCounters*> unique = UniqueEndpoints(*rule);
  ASSERT_EQ(unique.size(), 2u);
  EXPECT_EQ(unique[0]->key, "10.0.0.1:80");
  EXPECT_EQ(unique[1]->key, "10.0.0.2:80");
  EXPECT_EQ(rule->endpoint_counters[0], rule->endpoint_counters[2]);
}

TEST(AttachCountersTest, ANewGenerationKeepsTheCountersOfItsNameAndOfEndpointsThatStay) {
  auto first = std::make_shared<Rule>();
  first->name = "r";
  first->endpoints = {*net::Address::ParseLiteral("10.0.0.1:80"),
                      *net::Address::ParseLiteral("10.0.0.2:80")};
  AttachCounters(*first, nullptr, 1);
  first->stats(0).active.Add(3);
  first->endpoint_stats(1, 0).bytes_to_target.Add(100);

  auto second = std::make_shared<Rule>();
  second->name = "r";
  second->endpoints = {*net::Address::ParseLiteral("10.0.0.2:80"),
                       *net::Address::ParseLiteral("10.0.0.3:80")};
  AttachCounters(*second, first.get(), 1);
  EXPECT_EQ(second->counters, first->counters);
  EXPECT_EQ(ActiveConnections(*second), 3);
  EXPECT_EQ(second->endpoint_stats(0, 0).bytes_to_target.value(), 100u);
  EXPECT_EQ(second->endpoint_stats(1, 0).bytes_to_target.value(), 0u);
}

}  // namespace
}  // namespace ferry::proxy
