// SPDX-License-Identifier: Apache-2.0
#include "event_loop.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>

namespace lu {

namespace {

constexpr int kMaxEvents = 256;

}  // namespace

sigset_t stop_signals() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    return s;
}

std::unique_ptr<EventLoop> EventLoop::create(Handler& handler, std::string* why) {
    std::unique_ptr<EventLoop> loop(new EventLoop(handler));
    loop->epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
    loop->clients_epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
    loop->timerfd_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    sigset_t stop = stop_signals();
    loop->signalfd_.reset(signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));
    bool ok = loop->epfd_ && loop->clients_epfd_ && loop->timerfd_ && loop->signalfd_;
    // The nested client set, the timer and the signals are told apart by
    // their tags: the addresses of their fds.
    for (UniqueFd* fd : {&loop->clients_epfd_, &loop->timerfd_, &loop->signalfd_}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = fd;
        ok = ok && epoll_ctl(loop->epfd_.get(), EPOLL_CTL_ADD, fd->get(), &ev) == 0;
    }
    if (ok) return loop;
    *why = std::string("cannot set up the event loop: ") + strerror(errno);
    return nullptr;
}

int EventLoop::watch(Set set, int fd, void* tag, uint32_t events) {
    assert(tag);
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    int ep = set == Set::Clients ? clients_epfd_.get() : epfd_.get();
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

void EventLoop::rearm(Set set, int fd, void* tag, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    epoll_ctl(set == Set::Clients ? clients_epfd_.get() : epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void EventLoop::unwatch(Set set, int fd) {
    epoll_ctl(set == Set::Clients ? clients_epfd_.get() : epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

int EventLoop::watch_control_listener(int fd, void* tag) {
    control_listener_ = fd;
    control_tag_ = tag;
    return watch(Set::Main, fd, tag, EPOLLIN);
}

int EventLoop::watch_admin_listener(int fd, void* tag) {
    admin_listener_ = fd;
    admin_tag_ = tag;
    return watch(Set::Main, fd, tag, EPOLLIN);
}

// Pausing and resuming change what an fd already in the set waits for
// (EPOLL_CTL_MOD): unlike a delete and an add, that allocates nothing and
// cannot fail, so a rollback cannot leave the clients unserved.
void EventLoop::listen(int fd, void* tag, bool on) { rearm(Set::Main, fd, tag, on ? uint32_t{EPOLLIN} : 0u); }

void EventLoop::pause_clients() {
    if (clients_paused_) return;
    clients_paused_ = true;
    listen(clients_epfd_.get(), &clients_epfd_, false);
    listen(control_listener_, control_tag_, false);
}

void EventLoop::resume_clients() {
    if (!clients_paused_) return;
    clients_paused_ = false;
    listen(clients_epfd_.get(), &clients_epfd_, true);
    listen(control_listener_, control_tag_, true);
}

void EventLoop::pause_admin() {
    if (admin_paused_) return;
    admin_paused_ = true;
    listen(admin_listener_, admin_tag_, false);
}

void EventLoop::resume_admin() {
    if (!admin_paused_) return;
    admin_paused_ = false;
    listen(admin_listener_, admin_tag_, true);
}

void EventLoop::set_timer(uint64_t timeout_ms, std::function<void()> on_expiry) {
    on_timer_ = std::move(on_expiry);
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(timeout_ms / 1000);
    its.it_value.tv_nsec = static_cast<long>((timeout_ms % 1000) * 1000000);
    if (timeout_ms == 0) its.it_value.tv_nsec = 1;
    timerfd_settime(timerfd_.get(), 0, &its, nullptr);
}

void EventLoop::cancel_timer() {
    itimerspec its{};
    timerfd_settime(timerfd_.get(), 0, &its, nullptr);
    on_timer_ = nullptr;
}

int EventLoop::run_once(int timeout_ms) {
    epoll_event events[kMaxEvents];
    int n = epoll_wait(epfd_.get(), events, kMaxEvents, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        spdlog::critical("epoll_wait: {}", strerror(errno));
        return -1;
    }
    for (int i = 0; i < n && running_; i++) {
        void* tag = events[i].data.ptr;
        if (tag == &timerfd_) {
            uint64_t ticks;
            while (read(timerfd_.get(), &ticks, sizeof ticks) > 0) {
            }
            if (auto cb = std::exchange(on_timer_, nullptr)) cb();
        } else if (tag == &signalfd_) {
            signalfd_siginfo si{};
            if (read(signalfd_.get(), &si, sizeof si) == sizeof si)
                handler_.on_stop_signal(static_cast<int>(si.ssi_signo));
        } else if (tag == &clients_epfd_) {
            if (!clients_paused_) serve_clients();
        } else {
            handler_.on_event(tag, events[i].events);
        }
    }
    return n;
}

// Client connections: hangups first, so a close the client finished before
// its next request is released before that request runs (a close is
// synchronous for the closer). The gate may close in the middle.
void EventLoop::serve_clients() {
    epoll_event events[kMaxEvents];
    int n = epoll_wait(clients_epfd_.get(), events, kMaxEvents, 0);
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j < n && running_ && !clients_paused_; j++) {
            bool hangup = events[j].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR);
            if (hangup == (pass == 0)) handler_.on_event(events[j].data.ptr, events[j].events);
        }
    }
}

}  // namespace lu
