// SPDX-License-Identifier: Apache-2.0
// MemfdHandler through the FileHandler interface, without the engine: preserve
// (and freeze) on the outgoing side, then retrieve from a dup of the engine's
// fd, as the next instance receives it, with the bytes preserve produced.
#include "handlers/memfd_handler.hpp"

#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "handler_test_util.hpp"
#include "unique_fd.hpp"

namespace lu {
namespace {

using testing::Incoming;
using testing::Outgoing;
using testing::preserve;
using testing::retrieve;

UniqueFd make_memfd(size_t size, unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING) {
    UniqueFd fd(memfd_create("lu-test", flags));
    if (fd && ftruncate(fd.get(), static_cast<off_t>(size)) < 0) fd.reset();
    return fd;
}

std::vector<uint8_t> random_bytes(size_t n) {
    std::mt19937 rng(1234);
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
}

std::vector<uint8_t> pread_all(int fd, size_t n) {
    std::vector<uint8_t> v(n);
    size_t done = 0;
    while (done < n) {
        const ssize_t r = pread(fd, v.data() + done, n - done, static_cast<off_t>(done));
        if (r <= 0) break;
        done += static_cast<size_t>(r);
    }
    v.resize(done);
    return v;
}

bool pwrite_all(int fd, const std::vector<uint8_t>& v) {
    return pwrite(fd, v.data(), v.size(), 0) == static_cast<ssize_t>(v.size());
}

MemfdSer ser_of(const std::vector<uint8_t>& bytes) {
    MemfdSer s{};
    if (bytes.size() == sizeof s) std::memcpy(&s, bytes.data(), sizeof s);
    return s;
}

std::vector<uint8_t> bytes_of(const MemfdSer& s) {
    const auto* p = reinterpret_cast<const uint8_t*>(&s);
    return {p, p + sizeof s};
}

off_t offset_of(int fd) {
    return lseek(fd, 0, SEEK_CUR);
}

bool is_tmpfs(const char* path) {
    struct statfs s;
    return statfs(path, &s) == 0 && s.f_type == TMPFS_MAGIC;
}

// A full round trip of a memfd holding `data`; the contents must come back exactly.
void round_trip(const std::vector<uint8_t>& data) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(data.size());
    ASSERT_TRUE(mfd);
    ASSERT_TRUE(pwrite_all(mfd.get(), data));
    ASSERT_TRUE(h.can_preserve(mfd.get()));
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    ASSERT_EQ(out.args.serialized_data.size(), sizeof(MemfdSer));
    EXPECT_EQ(ser_of(out.args.serialized_data).size, data.size());
    ASSERT_EQ(h.freeze(out.args), 0);
    mfd.reset();  // the caller may close its fd: the engine's keeps the memfd

    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    out.fd.reset();  // the old instance is gone
    struct stat st;
    ASSERT_EQ(fstat(in.file.get(), &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), data.size());
    EXPECT_EQ(pread_all(in.file.get(), data.size() + 1), data);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, CompatibleIsMemfdV2) {
    EXPECT_EQ(MemfdHandler().compatible(), "memfd-v2");
}

TEST(MemfdHandlerTest, RoundTripEmpty) {
    round_trip({});
}

TEST(MemfdHandlerTest, RoundTripOnePage) {
    round_trip(random_bytes(static_cast<size_t>(sysconf(_SC_PAGESIZE))));
}

TEST(MemfdHandlerTest, RoundTripOneMiBRandom) {
    round_trip(random_bytes(1 << 20));
}

TEST(MemfdHandlerTest, PositionPreserved) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(20000);
    ASSERT_TRUE(mfd);
    ASSERT_EQ(lseek(mfd.get(), 12345, SEEK_SET), 12345);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).pos, 12345u);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    EXPECT_EQ(offset_of(in.file.get()), 12345);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, FreezeRefreshesPosition) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(20000);
    ASSERT_TRUE(mfd);
    ASSERT_EQ(lseek(mfd.get(), 100, SEEK_SET), 100);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    // The position belongs to the open file description, shared by every dup.
    ASSERT_EQ(lseek(mfd.get(), 777, SEEK_SET), 777);
    ASSERT_EQ(h.freeze(out.args), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).pos, 777u);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    EXPECT_EQ(offset_of(in.file.get()), 777);
    h.finish(in.args);
}

// The userspace difference: the size is carried at freeze, not frozen at preserve.
TEST(MemfdHandlerTest, FreezeRefreshesSize) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(4096);
    ASSERT_TRUE(mfd);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    ASSERT_EQ(ftruncate(mfd.get(), 10000), 0);
    ASSERT_EQ(h.freeze(out.args), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).size, 10000u);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    struct stat st;
    ASSERT_EQ(fstat(in.file.get(), &st), 0);
    EXPECT_EQ(st.st_size, 10000);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, GrowShrinkSealsPreserved) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(4096);
    ASSERT_TRUE(mfd);
    ASSERT_EQ(fcntl(mfd.get(), F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).seals, unsigned{F_SEAL_GROW | F_SEAL_SHRINK});
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    EXPECT_EQ(fcntl(in.file.get(), F_GET_SEALS), F_SEAL_GROW | F_SEAL_SHRINK);
    EXPECT_EQ(ftruncate(in.file.get(), 8192), -1);
    EXPECT_EQ(errno, EPERM);
    h.finish(in.args);
}

// Linux lets a write-sealed memfd be reopened O_RDWR; writes then fail with
// EPERM, as on the kernel's retrieved (resealed) memfd.
TEST(MemfdHandlerTest, WriteSealsPreserved) {
    for (int seal : {F_SEAL_WRITE, F_SEAL_FUTURE_WRITE}) {
        SCOPED_TRACE(seal);
        MemfdHandler h;
        const auto data = random_bytes(5000);
        UniqueFd mfd = make_memfd(data.size());
        ASSERT_TRUE(mfd);
        ASSERT_TRUE(pwrite_all(mfd.get(), data));
        ASSERT_EQ(fcntl(mfd.get(), F_ADD_SEALS, seal | F_SEAL_SEAL), 0);
        Outgoing out;
        ASSERT_EQ(preserve(h, mfd.get(), out), 0);
        Incoming in;
        ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
        EXPECT_EQ(fcntl(in.file.get(), F_GETFL) & O_ACCMODE, O_RDWR);
        EXPECT_EQ(fcntl(in.file.get(), F_GET_SEALS), seal | F_SEAL_SEAL);
        EXPECT_EQ(pread_all(in.file.get(), data.size()), data);
        EXPECT_EQ(pwrite(in.file.get(), "x", 1, 0), -1);
        EXPECT_EQ(errno, EPERM);
        h.finish(in.args);
    }
}

// Seals cannot be removed: ones added after preserve are still on the inode.
TEST(MemfdHandlerTest, SealsAddedAfterPreserveAreKept) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(4096);
    ASSERT_TRUE(mfd);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).seals, 0u);
    ASSERT_EQ(fcntl(mfd.get(), F_ADD_SEALS, F_SEAL_GROW), 0);
    ASSERT_EQ(h.freeze(out.args), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).seals, 0u);  // seals: preserve time only
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    EXPECT_EQ(fcntl(in.file.get(), F_GET_SEALS), F_SEAL_GROW);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, MemfdWithoutSealingIsAccepted) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(100, MFD_CLOEXEC);
    ASSERT_TRUE(mfd);
    ASSERT_TRUE(h.can_preserve(mfd.get()));
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    EXPECT_EQ(ser_of(out.args.serialized_data).seals, unsigned{F_SEAL_SEAL});
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    EXPECT_EQ(fcntl(in.file.get(), F_GET_SEALS), F_SEAL_SEAL);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, RetrievedFileIsANewOpenFileDescription) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(8192);
    ASSERT_TRUE(mfd);
    // A read-only open of the memfd comes back read-only (the kernel gives
    // O_RDWR, on a new inode: docs/kernel-differences.md).
    char path[32];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", mfd.get());
    UniqueFd ro(open(path, O_RDONLY));
    ASSERT_TRUE(ro);
    ASSERT_EQ(lseek(ro.get(), 10, SEEK_SET), 10);
    Outgoing out;
    ASSERT_EQ(preserve(h, ro.get(), out), 0);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    const int fd = in.file.get();
    EXPECT_NE(fd, in.preserved.get());
    EXPECT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC);
    EXPECT_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    EXPECT_EQ(offset_of(fd), 10);
    ASSERT_EQ(lseek(fd, 5000, SEEK_SET), 5000);
    EXPECT_EQ(offset_of(in.preserved.get()), 10);
    EXPECT_EQ(offset_of(ro.get()), 10);
    struct stat a, b;
    ASSERT_EQ(fstat(fd, &a), 0);
    ASSERT_EQ(fstat(mfd.get(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, WritesAfterPreserveAreVisible) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(4096);
    ASSERT_TRUE(mfd);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    const auto data = random_bytes(4096);
    ASSERT_TRUE(pwrite_all(mfd.get(), data));
    ASSERT_EQ(h.freeze(out.args), 0);
    Incoming in;
    ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
    EXPECT_EQ(pread_all(in.file.get(), data.size()), data);
    h.finish(in.args);
}

TEST(MemfdHandlerTest, CanPreserveAcceptsUnlinkedTmpfsFiles) {
    if (!is_tmpfs("/dev/shm")) GTEST_SKIP() << "/dev/shm is not tmpfs here";
    MemfdHandler h;
    UniqueFd tmpfile(open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    ASSERT_TRUE(tmpfile);
    EXPECT_TRUE(h.can_preserve(tmpfile.get()));

    char name[] = "/dev/shm/lu-memfd-test-XXXXXX";
    UniqueFd linked(mkstemp(name));
    ASSERT_TRUE(linked);
    EXPECT_FALSE(h.can_preserve(linked.get()));  // named: st_nlink 1
    ASSERT_EQ(unlink(name), 0);
    EXPECT_TRUE(h.can_preserve(linked.get()));
}

TEST(MemfdHandlerTest, CanPreserveRefusesOtherFiles) {
    MemfdHandler h;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    UniqueFd r(p[0]), w(p[1]);
    EXPECT_FALSE(h.can_preserve(r.get()));
    UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(sock);
    EXPECT_FALSE(h.can_preserve(sock.get()));
    UniqueFd dir(open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) {
        EXPECT_FALSE(h.can_preserve(dir.get()));
    }
    EXPECT_FALSE(h.can_preserve(-1));
}

// An unlinked file on a disk filesystem: not shmem, whatever its link count.
TEST(MemfdHandlerTest, CanPreserveRefusesDiskFile) {
    MemfdHandler h;
    for (const char* dir : {".", "/var/tmp", "/tmp"}) {
        struct statfs s;
        if (statfs(dir, &s) < 0 || s.f_type == TMPFS_MAGIC) continue;
        std::string name = std::string(dir) + "/lu-memfd-test-XXXXXX";
        UniqueFd fd(mkstemp(name.data()));
        if (!fd) continue;
        EXPECT_FALSE(h.can_preserve(fd.get()));
        ASSERT_EQ(unlink(name.c_str()), 0);
        EXPECT_FALSE(h.can_preserve(fd.get()));
        return;
    }
    GTEST_SKIP() << "no writable non-tmpfs directory";
}

TEST(MemfdHandlerTest, CanPreserveRefusesHugetlbMemfd) {
    // Creating a hugetlb memfd needs hugetlbfs, not free huge pages.
    UniqueFd fd(memfd_create("lu-test-huge", MFD_HUGETLB | MFD_CLOEXEC));
    if (!fd) GTEST_SKIP() << "MFD_HUGETLB unsupported here: " << std::strerror(errno);
    EXPECT_FALSE(MemfdHandler().can_preserve(fd.get()));
}

TEST(MemfdHandlerTest, PreserveRefusesMoreThanUintMaxPages) {
    MemfdHandler h;
    const off_t page = sysconf(_SC_PAGESIZE);
    UniqueFd mfd = make_memfd(0);
    ASSERT_TRUE(mfd);
    // Sparse: no memory is used.
    ASSERT_EQ(ftruncate(mfd.get(), (off_t{UINT32_MAX} + 1) * page), 0);
    Outgoing out;
    EXPECT_EQ(preserve(h, mfd.get(), out), -EFBIG);
    EXPECT_TRUE(out.args.serialized_data.empty());
    ASSERT_EQ(ftruncate(mfd.get(), off_t{UINT32_MAX} * page), 0);
    Outgoing ok;
    EXPECT_EQ(preserve(h, mfd.get(), ok), 0);
    // Grown past the limit before the freeze: the freeze fails.
    ASSERT_EQ(ftruncate(mfd.get(), off_t{UINT32_MAX} * page + 1), 0);
    EXPECT_EQ(h.freeze(ok.args), -EFBIG);
    h.unpreserve(ok.args);
}

class MemfdRetrieveRefusalTest : public ::testing::Test {
  protected:
    void SetUp() override {
        mfd_ = make_memfd(4096);
        ASSERT_TRUE(mfd_);
        ASSERT_EQ(fcntl(mfd_.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
        ASSERT_EQ(preserve(h_, mfd_.get(), out_), 0);
        ASSERT_EQ(h_.freeze(out_.args), 0);
        ser_ = ser_of(out_.args.serialized_data);
    }
    // Retrieve from `fd` with `bytes`; a failure must leave args.file alone.
    int retrieve_with(int fd, std::vector<uint8_t> bytes) {
        Incoming in;
        const int r = retrieve(h_, fd, std::move(bytes), in);
        if (r < 0) {
            EXPECT_EQ(in.args.file, -1);
        }
        h_.finish(in.args);
        return r;
    }
    int retrieve_with(const MemfdSer& s) { return retrieve_with(out_.fd.get(), bytes_of(s)); }

    MemfdHandler h_;
    UniqueFd mfd_;
    Outgoing out_;
    MemfdSer ser_{};
};

TEST_F(MemfdRetrieveRefusalTest, BaselineSucceeds) {
    EXPECT_EQ(retrieve_with(ser_), 0);
}

TEST_F(MemfdRetrieveRefusalTest, WrongLength) {
    auto bytes = out_.args.serialized_data;
    bytes.pop_back();
    EXPECT_EQ(retrieve_with(out_.fd.get(), bytes), -EINVAL);
    bytes.push_back(0);
    bytes.push_back(0);
    EXPECT_EQ(retrieve_with(out_.fd.get(), bytes), -EINVAL);
    EXPECT_EQ(retrieve_with(out_.fd.get(), {}), -EINVAL);
}

TEST_F(MemfdRetrieveRefusalTest, BadFields) {
    MemfdSer s = ser_;
    s.version = 2;
    EXPECT_EQ(retrieve_with(s), -EINVAL);
    s = ser_;
    s.flags = 4;  // no such access flag
    EXPECT_EQ(retrieve_with(s), -EINVAL);
    s = ser_;
    s.flags = kMemfdNoWrite | kMemfdNoRead;  // an fd that could do nothing
    EXPECT_EQ(retrieve_with(s), -EINVAL);
    s = ser_;
    s.pad = 1;
    EXPECT_EQ(retrieve_with(s), -EINVAL);
    s = ser_;
    s.pos = uint64_t{1} << 63;
    EXPECT_EQ(retrieve_with(s), -EINVAL);
}

// The kernel's errno for a seal it does not know (memfd_luo_retrieve).
TEST_F(MemfdRetrieveRefusalTest, UnknownSealBits) {
    MemfdSer s = ser_;
    s.seals |= 0x100;
    EXPECT_EQ(retrieve_with(s), -EOPNOTSUPP);
}

TEST_F(MemfdRetrieveRefusalTest, SizeChangedAfterFreeze) {
    ASSERT_EQ(ftruncate(mfd_.get(), 8192), 0);
    EXPECT_EQ(retrieve_with(ser_), -EINVAL);
    MemfdSer s = ser_;
    s.size = 8192;  // consistent again
    EXPECT_EQ(retrieve_with(s), 0);
}

TEST_F(MemfdRetrieveRefusalTest, RecordedSealsMissing) {
    UniqueFd other = make_memfd(4096);  // same size, no seals
    ASSERT_TRUE(other);
    EXPECT_EQ(retrieve_with(other.get(), out_.args.serialized_data), -EINVAL);
}

TEST_F(MemfdRetrieveRefusalTest, NotAMemfd) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    UniqueFd r(p[0]), w(p[1]);
    EXPECT_EQ(retrieve_with(r.get(), out_.args.serialized_data), -EINVAL);
    if (is_tmpfs("/dev/shm")) {
        char name[] = "/dev/shm/lu-memfd-test-XXXXXX";
        UniqueFd linked(mkstemp(name));
        ASSERT_TRUE(linked);
        ASSERT_EQ(ftruncate(linked.get(), 4096), 0);
        EXPECT_EQ(retrieve_with(linked.get(), out_.args.serialized_data), -EINVAL);
        unlink(name);
    }
}

TEST(MemfdHandlerTest, UnpreserveAndFinishLeaveTheFdsAlone) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(4096);
    ASSERT_TRUE(mfd);
    Outgoing out;
    ASSERT_EQ(preserve(h, mfd.get(), out), 0);
    h.unpreserve(out.args);
    // A normal memfd again: it can grow (the kernel unfreezes the size here).
    EXPECT_EQ(ftruncate(out.fd.get(), 8192), 0);

    Outgoing again;
    ASSERT_EQ(preserve(h, mfd.get(), again), 0);
    ASSERT_EQ(h.freeze(again.args), 0);
    for (int status : {0, 1, -EINVAL}) {
        Incoming in;
        in.preserved.reset(dup(again.fd.get()));
        in.args.handler = &h;
        in.args.preserved = in.preserved.get();
        in.args.serialized_data = again.args.serialized_data;
        in.args.retrieve_status = status;
        if (status == 1) {
            ASSERT_EQ(h.retrieve(in.args), 0);
            in.file.reset(in.args.file);
        }
        EXPECT_TRUE(h.can_finish(in.args));
        h.finish(in.args);
        EXPECT_EQ(fcntl(in.preserved.get(), F_GETFD), 0) << "finish must not close the engine's fd";
        if (status == 1) {
            EXPECT_EQ(fcntl(in.file.get(), F_GETFD), FD_CLOEXEC);
        }
    }
}

TEST(MemfdHandlerTest, GetIdIsTheInode) {
    MemfdHandler h;
    UniqueFd a = make_memfd(1), b = make_memfd(1);
    ASSERT_TRUE(a && b);
    UniqueFd a2(dup(a.get()));
    // The slot is what the engine read of the fd (one fstat per file).
    auto slot = [](int fd) {
        struct stat st;
        return fstat(fd, &st) == 0 ? fd_slot_of(st) : FdSlot{};
    };
    FileId ia, ia2, ib;
    ASSERT_EQ(h.get_id(a.get(), slot(a.get()), &ia), 0);
    ASSERT_EQ(h.get_id(a2.get(), slot(a2.get()), &ia2), 0);
    ASSERT_EQ(h.get_id(b.get(), slot(b.get()), &ib), 0);
    EXPECT_EQ(ia, ia2);
    EXPECT_FALSE(ia == ib);
    struct stat st;
    ASSERT_EQ(fstat(a.get(), &st), 0);
    EXPECT_EQ(ia.ino, st.st_ino);
    EXPECT_EQ(ia.dev, st.st_dev);
    EXPECT_EQ(h.get_id(-1, slot(-1), &ia), -EBADF);
}

// A retrieved memfd never grants more than the preserved fd held: the
// access mode travels, and a write through a read-only one fails.
TEST(MemfdHandlerTest, RetrieveKeepsTheAccessModeOfThePreservedFd) {
    MemfdHandler h;
    UniqueFd mfd = make_memfd(4096);
    ASSERT_TRUE(mfd);
    char path[32];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", mfd.get());
    for (int mode : {O_RDONLY, O_WRONLY, O_RDWR}) {
        UniqueFd opened(open(path, mode | O_CLOEXEC));
        ASSERT_TRUE(opened);
        Outgoing out;
        ASSERT_EQ(preserve(h, opened.get(), out), 0);
        Incoming in;
        ASSERT_EQ(retrieve(h, out.fd.get(), out.args.serialized_data, in), 0);
        EXPECT_EQ(fcntl(in.file.get(), F_GETFL) & O_ACCMODE, mode);
        char c = 'x';
        if (mode == O_RDONLY) {
            EXPECT_EQ(pwrite(in.file.get(), &c, 1, 0), -1);
            EXPECT_EQ(errno, EBADF);
        } else {
            EXPECT_EQ(pwrite(in.file.get(), &c, 1, 0), 1);
        }
        if (mode == O_WRONLY) {
            EXPECT_EQ(pread(in.file.get(), &c, 1, 0), -1);
            EXPECT_EQ(errno, EBADF);
        }
        h.finish(in.args);
    }
}

// What this daemon's uid could not reopen is refused at preserve, with the
// reopen's errno, rather than failing at retrieve for good.
TEST(MemfdHandlerTest, PreserveRefusesWhatCouldNotBeRetrieved) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to become an unprivileged user";
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) _exit(100);
        MemfdHandler h;
        UniqueFd mfd = make_memfd(4096);
        if (!mfd || fchmod(mfd.get(), 0400) != 0) _exit(101);
        Outgoing out;
        int r = preserve(h, mfd.get(), out);
        _exit(r == -EACCES ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "100+: could not become nobody; 1: preserve did not answer EACCES";
}

}  // namespace
}  // namespace lu
