/*
 * Test-only shim for running serial2mqtt's ARM builds under qemu-user (cross/smoke.sh).
 *
 * qemu-user lacks the TCGETS2/TCSETS2 ioctls (7.2 in Debian 12 answers ENOSYS, 10.0 from its
 * backports ENOTTY), which the serialport crate uses on Linux/glibc to read and set the line
 * speed. Under qemu every port open then fails, although the binary is fine on a real Pi. This
 * library, preloaded into the emulated process (qemu -E LD_PRELOAD=...), answers those two
 * ioctls with the classic TCGETS/TCSETS ones, which qemu does translate, mapping the speed to
 * the standard Bxxx codes. Everything else goes to the real ioctl. It is never shipped.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>

/* The kernel's structures (asm-generic, as on arm and aarch64), not glibc's. */
#define KNCCS 19
struct ktermios {
    unsigned int c_iflag, c_oflag, c_cflag, c_lflag;
    unsigned char c_line;
    unsigned char c_cc[KNCCS];
};
struct ktermios2 {
    unsigned int c_iflag, c_oflag, c_cflag, c_lflag;
    unsigned char c_line;
    unsigned char c_cc[KNCCS];
    unsigned int c_ispeed, c_ospeed;
};

#define K_TCGETS 0x5401
#define K_TCSETS 0x5402
#define K_TCSETSW 0x5403
#define K_TCSETSF 0x5404
#define K_TCGETS2 _IOR('T', 0x2A, struct ktermios2)
#define K_TCSETS2 _IOW('T', 0x2B, struct ktermios2)
#define K_TCSETSW2 _IOW('T', 0x2C, struct ktermios2)
#define K_TCSETSF2 _IOW('T', 0x2D, struct ktermios2)
#define K_CBAUD 0010017
#define K_BOTHER 0010000

static const struct { unsigned int code, speed; } speeds[] = {
    {0, 0}, {1, 50}, {2, 75}, {3, 110}, {4, 134}, {5, 150}, {6, 200}, {7, 300}, {8, 600},
    {9, 1200}, {10, 1800}, {11, 2400}, {12, 4800}, {13, 9600}, {14, 19200}, {15, 38400},
    {0010001, 57600}, {0010002, 115200}, {0010003, 230400}, {0010004, 460800},
    {0010005, 500000}, {0010006, 576000}, {0010007, 921600}, {0010010, 1000000},
    {0010011, 1152000}, {0010012, 1500000}, {0010013, 2000000}, {0010014, 2500000},
    {0010015, 3000000}, {0010016, 3500000}, {0010017, 4000000},
};

static int (*real_ioctl)(int, unsigned long, ...);

static unsigned int speed_of(unsigned int code) {
    for (unsigned i = 0; i < sizeof speeds / sizeof speeds[0]; i++)
        if (speeds[i].code == code) return speeds[i].speed;
    return 0;
}

static int code_of(unsigned int speed, unsigned int *code) {
    for (unsigned i = 0; i < sizeof speeds / sizeof speeds[0]; i++)
        if (speeds[i].speed == speed) { *code = speeds[i].code; return 0; }
    return -1;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (!real_ioctl) real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");

    if (request == K_TCGETS2) {
        struct ktermios k;
        if (real_ioctl(fd, K_TCGETS, &k) != 0) return -1;
        struct ktermios2 *t = arg;
        memcpy(t, &k, sizeof k);
        t->c_ispeed = t->c_ospeed = speed_of(k.c_cflag & K_CBAUD);
        return 0;
    }
    if (request == K_TCSETS2 || request == K_TCSETSW2 || request == K_TCSETSF2) {
        const struct ktermios2 *t = arg;
        struct ktermios k;
        memcpy(&k, t, sizeof k);
        if ((k.c_cflag & K_CBAUD) == K_BOTHER) {
            unsigned int code;
            if (code_of(t->c_ospeed, &code) != 0) { errno = EINVAL; return -1; }
            k.c_cflag = (k.c_cflag & ~K_CBAUD) | code;
        }
        unsigned long classic = request == K_TCSETS2 ? K_TCSETS
                              : request == K_TCSETSW2 ? K_TCSETSW : K_TCSETSF;
        return real_ioctl(fd, classic, &k);
    }
    return real_ioctl(fd, request, arg);
}
