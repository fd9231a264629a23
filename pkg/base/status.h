#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status from the enclosing function if `expr` is not OK.
#define FERRY_RETURN_IF_ERROR(expr)            \
  do {                                         \
    ::absl::Status ferry_status_ = (expr);     \
    if (!ferry_status_.ok()) return ferry_status_; \
  } while (0)

#define FERRY_CONCAT_INNER_(a, b) a##b
#define FERRY_CONCAT_(a, b) FERRY_CONCAT_INNER_(a, b)

// Assigns the value of a StatusOr to `lhs`, or returns its status.
#define FERRY_ASSIGN_OR_RETURN(lhs, expr) \
  FERRY_ASSIGN_OR_RETURN_IMPL_(FERRY_CONCAT_(ferry_statusor_, __LINE__), lhs, expr)
#define FERRY_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// Aborts with a message when an invariant does not hold. For bugs, never for
// conditions the environment can cause (EMFILE, ECONNREFUSED, a peer's RST).
#define FERRY_CHECK(cond)                                              \
  do {                                                                 \
    if (!(cond)) ::ferry::base::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace ferry::base {
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line);
}  // namespace ferry::base
