#pragma once

#include <string>

namespace ferry::metrics {

// The status page served at "/" by the admin server: one self-contained HTML
// document (pkg/metrics/status_page.html, embedded at build time) that polls
// /endpoints and draws rules, endpoints, throughput and outcomes. Built once,
// never freed; safe to call from any thread.
const std::string& StatusPageHtml();

}  // namespace ferry::metrics
