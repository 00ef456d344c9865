// SPDX-License-Identifier: Apache-2.0
// lu_open (control socket and its hello) and lu_admin_request, against a
// fake daemon listening in a temporary runtime directory.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <liveupdate/client.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <string>
#include <thread>

#include "fake_server.hpp"

namespace {

using fake::recv_request;
using fake::RuntimeDir;
using fake::send_reply;

class OpenTest : public fake::FdLeakTest {};

// Accepts one connection and sends it the hello with err.
std::thread hello_daemon(int listener, int32_t err) {
    return std::thread([listener, err] {
        int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        ASSERT_GE(c, 0);
        send_reply(c, err, nullptr, 0);
        close(c);
    });
}

TEST_F(OpenTest, NoDaemonIsENOENT) {
    RuntimeDir dir;
    EXPECT_EQ(lu_open(), -ENOENT);  // no socket
    close(dir.listen_at("control"));
    EXPECT_EQ(lu_open(), -ENOENT);  // a socket nobody listens on: ECONNREFUSED
    EXPECT_EQ(lu_admin_request("{}", nullptr), -EFAULT);
    char* reply = nullptr;
    EXPECT_EQ(lu_admin_request("{\"op\":\"status\"}", &reply), -ENOENT);
    EXPECT_EQ(reply, nullptr);
}

TEST_F(OpenTest, HelloOkGivesACloexecFd) {
    RuntimeDir dir;
    int l = dir.listen_at("control");
    auto d = hello_daemon(l, 0);
    int fd = lu_open();
    d.join();
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
    close(l);
}

TEST_F(OpenTest, HelloErrorsAreReturned) {
    RuntimeDir dir;
    int l = dir.listen_at("control");
    for (int err : {EBUSY, EIO}) {
        auto d = hello_daemon(l, err);
        EXPECT_EQ(lu_open(), -err);
        d.join();
    }
    close(l);
}

TEST_F(OpenTest, HangupBeforeHelloIsEOWNERDEAD) {
    RuntimeDir dir;
    int l = dir.listen_at("control");
    std::thread d([l] { close(accept4(l, nullptr, nullptr, SOCK_CLOEXEC)); });
    EXPECT_EQ(lu_open(), -EOWNERDEAD);
    d.join();
    close(l);
}

TEST_F(OpenTest, PermissionDeniedIsEACCES) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to an unprivileged user";
    RuntimeDir dir;  // 0700, owned by root
    int l = dir.listen_at("control");
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) _exit(100);
        _exit(lu_open() == -EACCES ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(l);
}

// Accepts one admin connection, checks the request text and answers with
// a memfd holding `answer`, written with write() so that its offset is at
// the end (the client must read from offset 0).
std::thread admin_daemon(int listener, std::string expect, std::string answer, int32_t err = 0,
                         bool with_fd = true) {
    return std::thread([=] {
        int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        ASSERT_GE(c, 0);
        auto req = recv_request(c);
        EXPECT_EQ(req.text, expect);
        EXPECT_TRUE(req.fds.empty());
        int m = memfd_create("status", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        ASSERT_EQ(write(m, answer.data(), answer.size()), (ssize_t)answer.size());
        fcntl(m, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
        if (with_fd)
            send_reply(c, err, nullptr, 0, {m});
        else
            send_reply(c, err, nullptr, 0);
        close(m);
        close(c);
    });
}

TEST_F(OpenTest, AdminRequestReturnsTheMemfdContents) {
    RuntimeDir dir;
    int l = dir.listen_at("admin");
    std::string big(100000, ' ');  // larger than any message: why it is a memfd
    std::string answer = "{\"pid\":42,\"pad\":\"" + big + "\"}";
    auto d = admin_daemon(l, "{\"op\":\"status\"}", answer);
    char* reply = nullptr;
    ASSERT_EQ(lu_admin_request("{\"op\":\"status\"}", &reply), 0);
    d.join();
    ASSERT_NE(reply, nullptr);
    EXPECT_EQ(std::string(reply), answer);
    lu_free(reply);
    close(l);
}

TEST_F(OpenTest, AdminErrors) {
    RuntimeDir dir;
    int l = dir.listen_at("admin");
    char* reply = nullptr;

    auto d = admin_daemon(l, "{}", "", EPERM);
    EXPECT_EQ(lu_admin_request("{}", &reply), -EPERM);
    d.join();
    EXPECT_EQ(reply, nullptr);

    d = admin_daemon(l, "{}", "", 0, /*with_fd=*/false);
    EXPECT_EQ(lu_admin_request("{}", &reply), -EPROTO);
    d.join();

    std::string huge(LU_WIRE_MAX_ADMIN + 1, ' ');
    EXPECT_EQ(lu_admin_request(huge.c_str(), &reply), -E2BIG);
    EXPECT_EQ(lu_admin_request(nullptr, &reply), -EFAULT);
    close(l);
}

}  // namespace
