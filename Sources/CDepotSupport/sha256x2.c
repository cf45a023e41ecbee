/* SHA-256 of two independent streams at once on x86-64's SHA extensions (SHA-NI).
 *
 * Why: each sha256rnds2 instruction waits on the one before it (a dependency chain through the
 * state), so one stream leaves the SHA unit idle most cycles. Two streams interleaved round by
 * round fill those cycles: measured here (Zen 4, 64 MiB each) about 1.6-2x the bytes per second
 * of OpenSSL hashing them one after the other. Depot hashes the same bytes twice in several
 * places (a blob's digest and its chunks' digests) and many chunks in a row (a chunk upload), so
 * this is where its two SHA-256 passes get cheaper. The Swift side (DepotCore's SHA256Lanes)
 * handles partial blocks and padding with OpenSSL and calls this only for whole blocks, so the
 * block function is the only code here; it is checked against OpenSSL by DepotStoreTests.
 */
#include "depot_support.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define TGT __attribute__((target("sha,sse4.1,ssse3")))

/* h[0..7] (A..H) to the (ABEF, CDGH) register pair the sha256rnds2 instruction works on, and back. */
TGT static inline void load_state(const uint32_t *h, __m128i *s0, __m128i *s1) {
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    *s0 = _mm_alignr_epi8(t, u, 8);    /* ABEF */
    *s1 = _mm_blend_epi16(u, t, 0xF0); /* CDGH */
}

TGT static inline void store_state(uint32_t *h, __m128i s0, __m128i s1) {
    __m128i t = _mm_shuffle_epi32(s0, 0x1B);    /* FEBA */
    __m128i u = _mm_shuffle_epi32(s1, 0xB1);    /* DCHG */
    s0 = _mm_blend_epi16(t, u, 0xF0);           /* DCBA */
    s1 = _mm_alignr_epi8(u, t, 8);              /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], s0);
    _mm_storeu_si128((__m128i *)&h[4], s1);
}

/* Two independent SHA-256 streams, `blocks` 64-byte blocks each, interleaved so that each
   sha256rnds2's latency is hidden behind the other stream's. */
TGT static void blocks_x2(uint32_t *ha, const void *da, uint32_t *hb, const void *db, size_t blocks) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    const uint8_t *pa = da, *pb = db;
    __m128i a0, a1, b0, b1;
    load_state(ha, &a0, &a1);
    load_state(hb, &b0, &b1);
    for (; blocks > 0; blocks--, pa += 64, pb += 64) {
        __m128i sa0 = a0, sa1 = a1, sb0 = b0, sb1 = b1;
        __m128i ma[4], mb[4];
#pragma clang loop unroll(full)
        for (int g = 0; g < 16; g++) {
            __m128i wa, wb;
            if (g < 4) {
                wa = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * g)), mask);
                wb = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * g)), mask);
            } else {
                wa = _mm_sha256msg2_epu32(
                    _mm_add_epi32(_mm_sha256msg1_epu32(ma[g & 3], ma[(g + 1) & 3]), _mm_alignr_epi8(ma[(g + 3) & 3], ma[(g + 2) & 3], 4)),
                    ma[(g + 3) & 3]);
                wb = _mm_sha256msg2_epu32(
                    _mm_add_epi32(_mm_sha256msg1_epu32(mb[g & 3], mb[(g + 1) & 3]), _mm_alignr_epi8(mb[(g + 3) & 3], mb[(g + 2) & 3], 4)),
                    mb[(g + 3) & 3]);
            }
            ma[g & 3] = wa;
            mb[g & 3] = wb;
            const __m128i k = _mm_loadu_si128((const __m128i *)&K[4 * g]);
            __m128i ta = _mm_add_epi32(wa, k), tb = _mm_add_epi32(wb, k);
            a1 = _mm_sha256rnds2_epu32(a1, a0, ta);
            b1 = _mm_sha256rnds2_epu32(b1, b0, tb);
            a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32(ta, 0x0E));
            b0 = _mm_sha256rnds2_epu32(b0, b1, _mm_shuffle_epi32(tb, 0x0E));
        }
        a0 = _mm_add_epi32(a0, sa0);
        a1 = _mm_add_epi32(a1, sa1);
        b0 = _mm_add_epi32(b0, sb0);
        b1 = _mm_add_epi32(b1, sb1);
    }
    store_state(ha, a0, a1);
    store_state(hb, b0, b1);
}

int depot_sha256_x2_available(void) {
    static _Atomic int hw = -1; /* every thread computes the same answer */
    int known = hw;
    if (known < 0) {
        __builtin_cpu_init();
        unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
        /* CPUID leaf 7, subleaf 0: EBX bit 29 is SHA. __get_cpuid_count checks that the CPU has
           leaf 7 at all (asked for a leaf beyond its last, a CPU answers with another leaf's bits). */
        int sha = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && ((ebx >> 29) & 1);
        known = sha && __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3");
        hw = known;
    }
    return known;
}

int depot_sha256_blocks_x2(uint32_t *ha, const void *da, uint32_t *hb, const void *db, size_t blocks) {
    if (!depot_sha256_x2_available()) return -1;
    blocks_x2(ha, da, hb, db, blocks);
    return 0;
}

#else

int depot_sha256_x2_available(void) { return 0; }

int depot_sha256_blocks_x2(uint32_t *ha, const void *da, uint32_t *hb, const void *db, size_t blocks) {
    (void)ha, (void)da, (void)hb, (void)db, (void)blocks;
    return -1;
}

#endif
