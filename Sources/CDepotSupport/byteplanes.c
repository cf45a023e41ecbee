// Byte-plane transforms for the zstdShuffle codecs (DepotStore/Codec.swift): byte k of every
// `width`-byte element goes to plane k (group) and back (ungroup). A GET of fp32 weights stored
// as byte planes ran a fifth of its CPU in the scalar Swift loop this replaces (one byte a
// step, a strided store each); SSE2 moves 16 elements a step. SSE2 is part of x86-64, so there
// is no CPU check; elsewhere the scalar loops run (compilers vectorize them where they can).
// Both give identical bytes: tests compare them with the definition (ChunkerTests) and a fuzz
// harness round-trips every input through the codecs (chunkrecord).
#include "depot_support.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static void group_scalar(const uint8_t *src, size_t n, size_t width, uint8_t *dst, size_t from) {
    for (size_t k = 0; k < width; k++) {
        uint8_t *plane = dst + k * n;
        for (size_t e = from; e < n; e++) plane[e] = src[e * width + k];
    }
}

static void ungroup_scalar(const uint8_t *src, size_t n, size_t width, uint8_t *dst, size_t from) {
    for (size_t k = 0; k < width; k++) {
        const uint8_t *plane = src + k * n;
        for (size_t e = from; e < n; e++) dst[e * width + k] = plane[e];
    }
}

void depot_bytes_group(const void *input, size_t elements, size_t width, void *output) {
    const uint8_t *src = input;
    uint8_t *dst = output;
    size_t e = 0;
#if defined(__SSE2__)
    const __m128i low = _mm_set1_epi16(0x00FF);
    if (width == 4) {
        uint8_t *p0 = dst, *p1 = dst + elements, *p2 = dst + 2 * elements, *p3 = dst + 3 * elements;
        for (; e + 16 <= elements; e += 16) {
            const uint8_t *s = src + e * 4;
            __m128i v0 = _mm_loadu_si128((const __m128i *)s), v1 = _mm_loadu_si128((const __m128i *)(s + 16));
            __m128i v2 = _mm_loadu_si128((const __m128i *)(s + 32)), v3 = _mm_loadu_si128((const __m128i *)(s + 48));
            // Bytes 0 and 2 of elements 0..7 (8..15), then bytes 1 and 3.
            __m128i even0 = _mm_packus_epi16(_mm_and_si128(v0, low), _mm_and_si128(v1, low));
            __m128i even1 = _mm_packus_epi16(_mm_and_si128(v2, low), _mm_and_si128(v3, low));
            __m128i odd0 = _mm_packus_epi16(_mm_srli_epi16(v0, 8), _mm_srli_epi16(v1, 8));
            __m128i odd1 = _mm_packus_epi16(_mm_srli_epi16(v2, 8), _mm_srli_epi16(v3, 8));
            _mm_storeu_si128((__m128i *)(p0 + e), _mm_packus_epi16(_mm_and_si128(even0, low), _mm_and_si128(even1, low)));
            _mm_storeu_si128((__m128i *)(p2 + e), _mm_packus_epi16(_mm_srli_epi16(even0, 8), _mm_srli_epi16(even1, 8)));
            _mm_storeu_si128((__m128i *)(p1 + e), _mm_packus_epi16(_mm_and_si128(odd0, low), _mm_and_si128(odd1, low)));
            _mm_storeu_si128((__m128i *)(p3 + e), _mm_packus_epi16(_mm_srli_epi16(odd0, 8), _mm_srli_epi16(odd1, 8)));
        }
    } else if (width == 2) {
        uint8_t *p0 = dst, *p1 = dst + elements;
        for (; e + 16 <= elements; e += 16) {
            const uint8_t *s = src + e * 2;
            __m128i v0 = _mm_loadu_si128((const __m128i *)s), v1 = _mm_loadu_si128((const __m128i *)(s + 16));
            _mm_storeu_si128((__m128i *)(p0 + e), _mm_packus_epi16(_mm_and_si128(v0, low), _mm_and_si128(v1, low)));
            _mm_storeu_si128((__m128i *)(p1 + e), _mm_packus_epi16(_mm_srli_epi16(v0, 8), _mm_srli_epi16(v1, 8)));
        }
    }
#endif
    group_scalar(src, elements, width, dst, e);
}

void depot_bytes_ungroup(const void *input, size_t elements, size_t width, void *output) {
    const uint8_t *src = input;
    uint8_t *dst = output;
    size_t e = 0;
#if defined(__SSE2__)
    if (width == 4) {
        const uint8_t *p0 = src, *p1 = src + elements, *p2 = src + 2 * elements, *p3 = src + 3 * elements;
        for (; e + 16 <= elements; e += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p0 + e)), b = _mm_loadu_si128((const __m128i *)(p1 + e));
            __m128i c = _mm_loadu_si128((const __m128i *)(p2 + e)), d = _mm_loadu_si128((const __m128i *)(p3 + e));
            __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
            __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
            uint8_t *o = dst + e * 4;
            _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(ab_lo, cd_lo));
            _mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
            _mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
            _mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
        }
    } else if (width == 2) {
        const uint8_t *p0 = src, *p1 = src + elements;
        for (; e + 16 <= elements; e += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p0 + e)), b = _mm_loadu_si128((const __m128i *)(p1 + e));
            _mm_storeu_si128((__m128i *)(dst + e * 2), _mm_unpacklo_epi8(a, b));
            _mm_storeu_si128((__m128i *)(dst + e * 2 + 16), _mm_unpackhi_epi8(a, b));
        }
    }
#endif
    ungroup_scalar(src, elements, width, dst, e);
}
