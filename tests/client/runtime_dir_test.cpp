// SPDX-License-Identifier: Apache-2.0
// lu_runtime_dir: the resolution every client and the daemon share.
#include <errno.h>
#include <gtest/gtest.h>
#include <liveupdate/client.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <string>

namespace {

// Saves and restores the two variables the resolution reads.
class RuntimeDirTest : public ::testing::Test {
  protected:
    void SetUp() override {
        save("LIVEUPDATE_RUNTIME_DIR", lu_);
        save("XDG_RUNTIME_DIR", xdg_);
    }
    void TearDown() override {
        restore("LIVEUPDATE_RUNTIME_DIR", lu_);
        restore("XDG_RUNTIME_DIR", xdg_);
    }
    static std::string resolve(int* rc) {
        char buf[256];
        *rc = lu_runtime_dir(buf, sizeof(buf));
        return *rc == 0 ? buf : "";
    }

  private:
    static void save(const char* name, std::optional<std::string>& v) {
        if (const char* s = getenv(name)) v = s;
    }
    static void restore(const char* name, const std::optional<std::string>& v) {
        if (v)
            setenv(name, v->c_str(), 1);
        else
            unsetenv(name);
    }
    std::optional<std::string> lu_, xdg_;
};

// Runs f as an unprivileged user: in a forked child when we are root, so
// that the non-root branch is tested either way. f returns 0 on success.
template <typename F>
void as_unprivileged(F f) {
    if (geteuid() != 0) {
        EXPECT_EQ(f(), 0);
        return;
    }
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) _exit(100);
        _exit(f());
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(RuntimeDirTest, EnvironmentWins) {
    setenv("LIVEUPDATE_RUNTIME_DIR", "/tmp/lu-somewhere", 1);
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    int rc;
    EXPECT_EQ(resolve(&rc), "/tmp/lu-somewhere");
    EXPECT_EQ(rc, 0);
}

TEST_F(RuntimeDirTest, EmptyEnvironmentFallsBack) {
    setenv("LIVEUPDATE_RUNTIME_DIR", "", 1);
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    int rc;
    std::string dir = resolve(&rc);
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(dir, geteuid() == 0 ? "/run/liveupdate" : "/run/user/1000/liveupdate");
}

TEST_F(RuntimeDirTest, RootUsesRunLiveupdate) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    unsetenv("LIVEUPDATE_RUNTIME_DIR");
    setenv("XDG_RUNTIME_DIR", "/run/user/0", 1);
    int rc;
    EXPECT_EQ(resolve(&rc), "/run/liveupdate");
}

TEST_F(RuntimeDirTest, UserUsesXdgRuntimeDir) {
    unsetenv("LIVEUPDATE_RUNTIME_DIR");
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    as_unprivileged([] {
        char buf[128];
        if (lu_runtime_dir(buf, sizeof(buf)) != 0) return 1;
        return std::string(buf) == "/run/user/1000/liveupdate" ? 0 : 2;
    });
}

TEST_F(RuntimeDirTest, UserWithoutXdgIsENOENT) {
    unsetenv("LIVEUPDATE_RUNTIME_DIR");
    unsetenv("XDG_RUNTIME_DIR");
    as_unprivileged([] {
        char buf[128];
        if (lu_runtime_dir(buf, sizeof(buf)) != -ENOENT) return 1;
        setenv("XDG_RUNTIME_DIR", "", 1);
        return lu_runtime_dir(buf, sizeof(buf)) == -ENOENT ? 0 : 2;
    });
}

TEST_F(RuntimeDirTest, SocketPathMustFitSunPath) {
    // sun_path is 108 bytes: dir + "/control" + NUL must fit.
    std::string fits(108 - sizeof("/control"), 'a');
    fits[0] = '/';
    setenv("LIVEUPDATE_RUNTIME_DIR", fits.c_str(), 1);
    int rc;
    EXPECT_EQ(resolve(&rc), fits);
    setenv("LIVEUPDATE_RUNTIME_DIR", (fits + "a").c_str(), 1);
    resolve(&rc);
    EXPECT_EQ(rc, -ENAMETOOLONG);
}

TEST_F(RuntimeDirTest, BufferTooSmallOrNull) {
    setenv("LIVEUPDATE_RUNTIME_DIR", "/tmp/abc", 1);
    char buf[9];
    EXPECT_EQ(lu_runtime_dir(buf, 8), -ENAMETOOLONG);  // needs 9 with the NUL
    EXPECT_EQ(lu_runtime_dir(buf, 9), 0);
    EXPECT_STREQ(buf, "/tmp/abc");
    EXPECT_EQ(lu_runtime_dir(buf, 0), -ENAMETOOLONG);
    EXPECT_EQ(lu_runtime_dir(nullptr, 100), -EFAULT);
}

}  // namespace
