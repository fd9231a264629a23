#include "pkg/event/loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "pkg/base/log.h"
#include "pkg/base/status.h"

namespace ferry::event {

Loop::Loop(base::Clock& clock)
    : clock_(clock),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  FERRY_CHECK(epoll_.valid() && wake_.valid());
  now_ = clock_.NowNanos();
  thread_ = std::this_thread::get_id();
  FERRY_CHECK(Add(wake_.get(), EPOLLIN, &wake_handler_) == 0);
}

Loop::~Loop() {
  for (Timer* timer : timers_) timer->armed_ = false;
  deferred_.clear();
}

bool Loop::InLoopThread() const { return std::this_thread::get_id() == thread_; }

int Loop::Add(int fd, uint32_t events, Handler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : errno;
}

int Loop::Modify(int fd, uint32_t events, Handler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  return ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : errno;
}

void Loop::Remove(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void Loop::Schedule(Handler* handler) {
  if (std::find(scheduled_.begin(), scheduled_.end(), handler) == scheduled_.end()) {
    scheduled_.push_back(handler);
  }
}

void Loop::Unschedule(Handler* handler) {
  std::replace(scheduled_.begin(), scheduled_.end(), handler, static_cast<Handler*>(nullptr));
  std::replace(running_.begin(), running_.end(), handler, static_cast<Handler*>(nullptr));
}

void Loop::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof(one));
  (void)r;
}

void Loop::Stop() {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    stop_requested_ = true;
  }
  uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof(one));
  (void)r;
}

void Loop::DeferDelete(std::unique_ptr<Deletable> object) {
  deferred_.push_back(std::move(object));
}

void Loop::WakeHandler::OnEvents(uint32_t) {
  uint64_t value;
  ssize_t r = ::read(loop_.wake_.get(), &value, sizeof(value));
  (void)r;
}

void Loop::Place(size_t i, Timer* timer) {
  timers_[i] = timer;
  timer->heap_index_ = i;
}

void Loop::SiftUp(size_t i) {
  Timer* timer = timers_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (timers_[parent]->deadline_ <= timer->deadline_) break;
    Place(i, timers_[parent]);
    i = parent;
  }
  Place(i, timer);
}

void Loop::SiftDown(size_t i) {
  Timer* timer = timers_[i];
  const size_t n = timers_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && timers_[child + 1]->deadline_ < timers_[child]->deadline_) ++child;
    if (timer->deadline_ <= timers_[child]->deadline_) break;
    Place(i, timers_[child]);
    i = child;
  }
  Place(i, timer);
}

void Loop::ArmTimer(Timer* timer) {
  timer->armed_ = true;
  timers_.push_back(timer);
  timer->heap_index_ = timers_.size() - 1;
  SiftUp(timer->heap_index_);
}

void Loop::DisarmTimer(Timer* timer) {
  size_t i = timer->heap_index_;
  timer->armed_ = false;
  Timer* last = timers_.back();
  timers_.pop_back();
  if (last == timer) return;
  Place(i, last);
  SiftDown(i);
  SiftUp(last->heap_index_);
}

void Timer::ArmAt(int64_t deadline_nanos) {
  if (!armed_) {
    deadline_ = deadline_nanos;
    loop_.ArmTimer(this);
    return;
  }
  bool earlier = deadline_nanos < deadline_;
  deadline_ = deadline_nanos;
  if (earlier) {
    loop_.SiftUp(heap_index_);
  } else {
    loop_.SiftDown(heap_index_);
  }
}

void Timer::Disarm() {
  if (armed_) loop_.DisarmTimer(this);
}

int Loop::NextTimeoutMs() const {
  if (!scheduled_.empty()) return 0;
  if (timers_.empty()) return -1;
  int64_t delta = timers_.front()->deadline_ - clock_.NowNanos();
  if (delta <= 0) return 0;
  // Round up so a timer never fires early and the loop never busy-waits.
  return static_cast<int>(std::min<int64_t>((delta + base::kNanosPerMilli - 1) / base::kNanosPerMilli,
                                            3'600'000));
}

int Loop::RunTimers() {
  int ran = 0;
  while (!timers_.empty() && timers_.front()->deadline_ <= now_) {
    Timer* timer = timers_.front();
    DisarmTimer(timer);
    timer->callback_();  // may re-arm or destroy the timer
    ++ran;
  }
  return ran;
}

int Loop::RunScheduled() {
  if (scheduled_.empty()) return 0;
  // Handlers that schedule themselves again run in the next iteration.
  running_.swap(scheduled_);
  int ran = 0;
  for (size_t i = 0; i < running_.size(); ++i) {
    Handler* h = running_[i];
    if (h == nullptr) continue;
    h->OnEvents(0);
    ++ran;
  }
  running_.clear();
  return ran;
}

int Loop::RunPosted() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    tasks.swap(posted_);
    if (stop_requested_) stopping_ = true;
  }
  for (auto& task : tasks) task();
  return static_cast<int>(tasks.size());
}

int Loop::RunOnce(int timeout_ms) {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  int timeout = NextTimeoutMs();
  if (timeout < 0 || (timeout_ms >= 0 && timeout_ms < timeout)) timeout = timeout_ms;
  int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, timeout);
  if (n < 0) n = 0;  // EINTR
  now_ = clock_.NowNanos();
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    auto* handler = static_cast<Handler*>(events[i].data.ptr);
    if (handler == &wake_handler_) {
      handler->OnEvents(events[i].events);
      continue;  // counted through the posted tasks it announces
    }
    handler->OnEvents(events[i].events);
    ++ran;
  }
  ran += RunScheduled();
  ran += RunTimers();
  ran += RunPosted();
  deferred_.clear();
  return ran;
}

void Loop::Run() {
  thread_ = std::this_thread::get_id();
  while (!stopping_) RunOnce(-1);
  stopping_ = false;
  std::lock_guard<std::mutex> lock(posted_mu_);
  stop_requested_ = false;
}

void Loop::RunUntilIdle() {
  for (int i = 0; i < 100'000; ++i) {
    if (RunOnce(0) == 0 && scheduled_.empty()) {
      std::lock_guard<std::mutex> lock(posted_mu_);
      if (posted_.empty()) return;
    }
  }
}

}  // namespace ferry::event
