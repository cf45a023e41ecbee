#include "depot_support.h"
#include <string.h>

static uint32_t table[256];
static int have_table;

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    have_table = 1;
}

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *p, size_t n) {
    if (!have_table) build_table();
    crc = ~crc;
    while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = (uint32_t)~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

uint32_t depot_crc32c(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
    static int hw = -1;
    if (hw < 0) { __builtin_cpu_init(); hw = __builtin_cpu_supports("sse4.2"); }
    if (hw) return crc32c_hw(crc, (const uint8_t *)data, length);
#endif
    return crc32c_soft(crc, (const uint8_t *)data, length);
}
