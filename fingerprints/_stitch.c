/* MD5, SHA-1, SHA-256 and a stream of fixed-size SHA-256 leaves of one byte stream,
 * computed together ("stitched"), for fingerprints/digests.py.
 *
 * Why: register reads every released byte once and computes many digests of it. MD5
 * cannot use the CPU's SHA extensions and is bound by the latency of its own dependency
 * chain: while it runs, most of the core's execution units sit idle. The SHA extensions
 * (SHA-NI) run SHA-1 and SHA-256 on other units. Interleaving the rounds of all of them
 * block by block lets the out-of-order core run the SHA rounds in MD5's shadow: measured
 * on an AMD EPYC (Zen 3), MD5 + SHA-256 together cost what MD5 costs alone, where one
 * after the other cost the sum. Here one pass gives MD5, SHA-1, SHA-256 of the stream and
 * the SHA-256 of each `leaf_size` slice (BitTorrent v2's 16 KiB leaves, BEP 52) at about
 * MD5's price, about half the CPU of the four computed apart.
 *
 * The leaves share the stream's message blocks (a leaf boundary is always a block
 * boundary), so they share its message schedule too: one more pair of SHA-256 round
 * instructions per four rounds.
 *
 * Correctness is checked against hashlib and the pure-Python pieces root in
 * tests/test_stitch.py for every size around the block, leaf and update boundaries.
 * Where the CPU lacks SHA-NI (or is not x86-64), `available` is False and digests.py
 * uses hashlib as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STITCH_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define NI __attribute__((target("sha,ssse3,sse4.1")))
#else
#define STITCH_X86 0
#endif

static const uint32_t MD5_IV[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
static const uint32_t SHA1_IV[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476,
                                    0xc3d2e1f0};
static const uint32_t SHA256_IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

/* ---- MD5 (RFC 1321), four steps at a time so that SHA rounds can sit between ---- */
#define MD5_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MD5_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define ROTL32(x, c) (((x) << (c)) | ((x) >> (32 - (c))))
/* The message word and constant go into `a` first, while `b` (the previous step's result)
 * is still being computed: only the round function is on the dependency chain. */
#define MD5_STEP(f, a, b, c, d, x, t, s)                                                      \
    (a) += (x) + (uint32_t)(t);                                                              \
    (a) += f((b), (c), (d));                                                                 \
    (a) = ROTL32((a), (s));                                                                  \
    (a) += (b);
/* G as the sum of its two disjoint halves: the half without `b` is added early, so one
 * AND stands between `b` and the sum instead of three operations. */
#define MD5_STEP_G(a, b, c, d, x, t, s)                                                       \
    (a) += (x) + (uint32_t)(t) + ((c) & ~(d));                                               \
    (a) += (b) & (d);                                                                        \
    (a) = ROTL32((a), (s));                                                                  \
    (a) += (b);

#define MD5_G0 MD5_STEP(MD5_F, a, b, c, d, X[0], 0xd76aa478, 7) MD5_STEP(MD5_F, d, a, b, c, X[1], 0xe8c7b756, 12) MD5_STEP(MD5_F, c, d, a, b, X[2], 0x242070db, 17) MD5_STEP(MD5_F, b, c, d, a, X[3], 0xc1bdceee, 22)
#define MD5_G1 MD5_STEP(MD5_F, a, b, c, d, X[4], 0xf57c0faf, 7) MD5_STEP(MD5_F, d, a, b, c, X[5], 0x4787c62a, 12) MD5_STEP(MD5_F, c, d, a, b, X[6], 0xa8304613, 17) MD5_STEP(MD5_F, b, c, d, a, X[7], 0xfd469501, 22)
#define MD5_G2 MD5_STEP(MD5_F, a, b, c, d, X[8], 0x698098d8, 7) MD5_STEP(MD5_F, d, a, b, c, X[9], 0x8b44f7af, 12) MD5_STEP(MD5_F, c, d, a, b, X[10], 0xffff5bb1, 17) MD5_STEP(MD5_F, b, c, d, a, X[11], 0x895cd7be, 22)
#define MD5_G3 MD5_STEP(MD5_F, a, b, c, d, X[12], 0x6b901122, 7) MD5_STEP(MD5_F, d, a, b, c, X[13], 0xfd987193, 12) MD5_STEP(MD5_F, c, d, a, b, X[14], 0xa679438e, 17) MD5_STEP(MD5_F, b, c, d, a, X[15], 0x49b40821, 22)
#define MD5_G4 MD5_STEP_G(a, b, c, d, X[1], 0xf61e2562, 5) MD5_STEP_G(d, a, b, c, X[6], 0xc040b340, 9) MD5_STEP_G(c, d, a, b, X[11], 0x265e5a51, 14) MD5_STEP_G(b, c, d, a, X[0], 0xe9b6c7aa, 20)
#define MD5_G5 MD5_STEP_G(a, b, c, d, X[5], 0xd62f105d, 5) MD5_STEP_G(d, a, b, c, X[10], 0x02441453, 9) MD5_STEP_G(c, d, a, b, X[15], 0xd8a1e681, 14) MD5_STEP_G(b, c, d, a, X[4], 0xe7d3fbc8, 20)
#define MD5_G6 MD5_STEP_G(a, b, c, d, X[9], 0x21e1cde6, 5) MD5_STEP_G(d, a, b, c, X[14], 0xc33707d6, 9) MD5_STEP_G(c, d, a, b, X[3], 0xf4d50d87, 14) MD5_STEP_G(b, c, d, a, X[8], 0x455a14ed, 20)
#define MD5_G7 MD5_STEP_G(a, b, c, d, X[13], 0xa9e3e905, 5) MD5_STEP_G(d, a, b, c, X[2], 0xfcefa3f8, 9) MD5_STEP_G(c, d, a, b, X[7], 0x676f02d9, 14) MD5_STEP_G(b, c, d, a, X[12], 0x8d2a4c8a, 20)
#define MD5_G8 MD5_STEP(MD5_H, a, b, c, d, X[5], 0xfffa3942, 4) MD5_STEP(MD5_H, d, a, b, c, X[8], 0x8771f681, 11) MD5_STEP(MD5_H, c, d, a, b, X[11], 0x6d9d6122, 16) MD5_STEP(MD5_H, b, c, d, a, X[14], 0xfde5380c, 23)
#define MD5_G9 MD5_STEP(MD5_H, a, b, c, d, X[1], 0xa4beea44, 4) MD5_STEP(MD5_H, d, a, b, c, X[4], 0x4bdecfa9, 11) MD5_STEP(MD5_H, c, d, a, b, X[7], 0xf6bb4b60, 16) MD5_STEP(MD5_H, b, c, d, a, X[10], 0xbebfbc70, 23)
#define MD5_G10 MD5_STEP(MD5_H, a, b, c, d, X[13], 0x289b7ec6, 4) MD5_STEP(MD5_H, d, a, b, c, X[0], 0xeaa127fa, 11) MD5_STEP(MD5_H, c, d, a, b, X[3], 0xd4ef3085, 16) MD5_STEP(MD5_H, b, c, d, a, X[6], 0x04881d05, 23)
#define MD5_G11 MD5_STEP(MD5_H, a, b, c, d, X[9], 0xd9d4d039, 4) MD5_STEP(MD5_H, d, a, b, c, X[12], 0xe6db99e5, 11) MD5_STEP(MD5_H, c, d, a, b, X[15], 0x1fa27cf8, 16) MD5_STEP(MD5_H, b, c, d, a, X[2], 0xc4ac5665, 23)
#define MD5_G12 MD5_STEP(MD5_I, a, b, c, d, X[0], 0xf4292244, 6) MD5_STEP(MD5_I, d, a, b, c, X[7], 0x432aff97, 10) MD5_STEP(MD5_I, c, d, a, b, X[14], 0xab9423a7, 15) MD5_STEP(MD5_I, b, c, d, a, X[5], 0xfc93a039, 21)
#define MD5_G13 MD5_STEP(MD5_I, a, b, c, d, X[12], 0x655b59c3, 6) MD5_STEP(MD5_I, d, a, b, c, X[3], 0x8f0ccc92, 10) MD5_STEP(MD5_I, c, d, a, b, X[10], 0xffeff47d, 15) MD5_STEP(MD5_I, b, c, d, a, X[1], 0x85845dd1, 21)
#define MD5_G14 MD5_STEP(MD5_I, a, b, c, d, X[8], 0x6fa87e4f, 6) MD5_STEP(MD5_I, d, a, b, c, X[15], 0xfe2ce6e0, 10) MD5_STEP(MD5_I, c, d, a, b, X[6], 0xa3014314, 15) MD5_STEP(MD5_I, b, c, d, a, X[13], 0x4e0811a1, 21)
#define MD5_G15 MD5_STEP(MD5_I, a, b, c, d, X[4], 0xf7537e82, 6) MD5_STEP(MD5_I, d, a, b, c, X[11], 0xbd3af235, 10) MD5_STEP(MD5_I, c, d, a, b, X[2], 0x2ad7d2bb, 15) MD5_STEP(MD5_I, b, c, d, a, X[9], 0xeb86d391, 21)

static void md5_block(uint32_t s[4], const unsigned char *p)
{
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], X[16];
    memcpy(X, p, 64); /* MD5 reads little-endian words: as stored on x86 */
    MD5_G0 MD5_G1 MD5_G2 MD5_G3 MD5_G4 MD5_G5 MD5_G6 MD5_G7
    MD5_G8 MD5_G9 MD5_G10 MD5_G11 MD5_G12 MD5_G13 MD5_G14 MD5_G15
    s[0] += a; s[1] += b; s[2] += c; s[3] += d;
}

#if STITCH_X86
/* ---- SHA-1 and SHA-256 with the SHA extensions, in groups of four rounds (the well-known
 * Intel instruction sequence, written as one macro per group so they interleave) ---- */
#define SHA1_MASK _mm_set_epi64x(0x0001020304050607ULL, 0x08090a0b0c0d0e0fULL)
#define SHA256_MASK _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL)

/* Rounds 4r..4r+3 of SHA-1; W holds the message words four at a time. */
#define SHA1_GROUP(r)                                                                        \
    do {                                                                                     \
        if ((r) < 4)                                                                         \
            W[(r)] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * (r))),      \
                                      SHA1_MASK);                                            \
        if ((r) == 0) {                                                                      \
            E0 = _mm_add_epi32(E0, W[0]);                                                    \
            E1 = ABCD;                                                                       \
            ABCD = _mm_sha1rnds4_epu32(ABCD, E0, 0);                                         \
        } else if ((r) & 1) {                                                                \
            E1 = _mm_sha1nexte_epu32(E1, W[(r) & 3]);                                        \
            E0 = ABCD;                                                                       \
            if ((r) >= 3 && (r) <= 18)                                                       \
                W[((r) + 1) & 3] = _mm_sha1msg2_epu32(W[((r) + 1) & 3], W[(r) & 3]);        \
            ABCD = _mm_sha1rnds4_epu32(ABCD, E1, (r) / 5);                                   \
        } else {                                                                             \
            E0 = _mm_sha1nexte_epu32(E0, W[(r) & 3]);                                        \
            E1 = ABCD;                                                                       \
            if ((r) >= 3 && (r) <= 18)                                                       \
                W[((r) + 1) & 3] = _mm_sha1msg2_epu32(W[((r) + 1) & 3], W[(r) & 3]);        \
            ABCD = _mm_sha1rnds4_epu32(ABCD, E0, (r) / 5);                                   \
        }                                                                                    \
        if ((r) >= 1 && (r) <= 16)                                                           \
            W[((r) + 3) & 3] = _mm_sha1msg1_epu32(W[((r) + 3) & 3], W[(r) & 3]);            \
        if ((r) >= 2 && (r) <= 17)                                                           \
            W[((r) + 2) & 3] = _mm_xor_si128(W[((r) + 2) & 3], W[(r) & 3]);                 \
    } while (0)

/* Rounds 4g..4g+3 of SHA-256 for the stream (F0, F1) and, with LEAF, the leaf (L0, L1):
 * the same message block, so one message schedule M for both. */
#define SHA256_GROUP(g, LEAF)                                                                \
    do {                                                                                     \
        if ((g) < 4)                                                                         \
            M[(g)] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * (g))),      \
                                      SHA256_MASK);                                          \
        __m128i msg_ = _mm_add_epi32(M[(g) & 3],                                             \
                                     _mm_loadu_si128((const __m128i *)(K256 + 4 * (g))));    \
        __m128i high_ = _mm_shuffle_epi32(msg_, 0x0E);                                       \
        F1 = _mm_sha256rnds2_epu32(F1, F0, msg_);                                            \
        if (LEAF) L1 = _mm_sha256rnds2_epu32(L1, L0, msg_);                                  \
        if ((g) >= 3 && (g) <= 14) {                                                         \
            __m128i t_ = _mm_alignr_epi8(M[(g) & 3], M[((g) + 3) & 3], 4);                   \
            M[((g) + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(M[((g) + 1) & 3], t_),    \
                                                    M[(g) & 3]);                             \
        }                                                                                    \
        F0 = _mm_sha256rnds2_epu32(F0, F1, high_);                                           \
        if (LEAF) L0 = _mm_sha256rnds2_epu32(L0, L1, high_);                                 \
        if ((g) >= 1 && (g) <= 12)                                                           \
            M[((g) + 3) & 3] = _mm_sha256msg1_epu32(M[((g) + 3) & 3], M[(g) & 3]);          \
    } while (0)

NI static inline void sha1_load(const uint32_t s[5], __m128i *abcd, __m128i *e)
{
    *abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)s), 0x1B);
    *e = _mm_set_epi32((int)s[4], 0, 0, 0);
}

NI static inline void sha1_store(uint32_t s[5], __m128i abcd, __m128i e)
{
    _mm_storeu_si128((__m128i *)s, _mm_shuffle_epi32(abcd, 0x1B));
    s[4] = (uint32_t)_mm_extract_epi32(e, 3);
}

NI static inline void sha256_load(const uint32_t s[8], __m128i *s0, __m128i *s1)
{
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)s), 0xB1);
    __m128i hi = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(s + 4)), 0x1B);
    *s0 = _mm_alignr_epi8(tmp, hi, 8);        /* ABEF */
    *s1 = _mm_blend_epi16(hi, tmp, 0xF0);     /* CDGH */
}

NI static inline void sha256_store(uint32_t s[8], __m128i s0, __m128i s1)
{
    __m128i tmp = _mm_shuffle_epi32(s0, 0x1B);     /* FEBA */
    __m128i cd = _mm_shuffle_epi32(s1, 0xB1);      /* DCHG */
    _mm_storeu_si128((__m128i *)s, _mm_blend_epi16(tmp, cd, 0xF0));       /* DCBA */
    _mm_storeu_si128((__m128i *)(s + 4), _mm_alignr_epi8(cd, tmp, 8));    /* HGFE */
}

NI static void sha1_block(uint32_t s[5], const unsigned char *p)
{
    __m128i ABCD, E0, E1, W[4];
    sha1_load(s, &ABCD, &E0);
    __m128i abcd_save = ABCD, e_save = E0;
    SHA1_GROUP(0); SHA1_GROUP(1); SHA1_GROUP(2); SHA1_GROUP(3); SHA1_GROUP(4);
    SHA1_GROUP(5); SHA1_GROUP(6); SHA1_GROUP(7); SHA1_GROUP(8); SHA1_GROUP(9);
    SHA1_GROUP(10); SHA1_GROUP(11); SHA1_GROUP(12); SHA1_GROUP(13); SHA1_GROUP(14);
    SHA1_GROUP(15); SHA1_GROUP(16); SHA1_GROUP(17); SHA1_GROUP(18); SHA1_GROUP(19);
    E0 = _mm_sha1nexte_epu32(E0, e_save);
    ABCD = _mm_add_epi32(ABCD, abcd_save);
    sha1_store(s, ABCD, E0);
}

NI static void sha256_block(uint32_t s[8], const unsigned char *p)
{
    __m128i F0, F1, L0, L1, M[4];
    sha256_load(s, &F0, &F1);
    L0 = L1 = _mm_setzero_si128();
    (void)L0; (void)L1;
    __m128i s0 = F0, s1 = F1;
    SHA256_GROUP(0, 0); SHA256_GROUP(1, 0); SHA256_GROUP(2, 0); SHA256_GROUP(3, 0);
    SHA256_GROUP(4, 0); SHA256_GROUP(5, 0); SHA256_GROUP(6, 0); SHA256_GROUP(7, 0);
    SHA256_GROUP(8, 0); SHA256_GROUP(9, 0); SHA256_GROUP(10, 0); SHA256_GROUP(11, 0);
    SHA256_GROUP(12, 0); SHA256_GROUP(13, 0); SHA256_GROUP(14, 0); SHA256_GROUP(15, 0);
    sha256_store(s, _mm_add_epi32(F0, s0), _mm_add_epi32(F1, s1));
}

/* One 64-byte block into all streams, MD5's steps interleaved with the SHA rounds (SHA-1's
 * 20 groups spread over MD5's 16 in order). */
#define STITCHED_BODY(LEAF)                                                                  \
    uint32_t X[16];                                                                          \
    memcpy(X, p, 64);                                                                        \
    __m128i M[4], W[4], E1;                                                                  \
    __m128i f0_save = F0, f1_save = F1, l0_save = L0, l1_save = L1;                          \
    __m128i abcd_save = ABCD, e_save = E0;                                                   \
    uint32_t a0 = a, b0 = b, c0 = c, d0 = d;                                                 \
    MD5_G0 SHA256_GROUP(0, LEAF); SHA1_GROUP(0);                                             \
    MD5_G1 SHA256_GROUP(1, LEAF); SHA1_GROUP(1);                                             \
    MD5_G2 SHA256_GROUP(2, LEAF); SHA1_GROUP(2);                                             \
    MD5_G3 SHA256_GROUP(3, LEAF); SHA1_GROUP(3); SHA1_GROUP(4);                              \
    MD5_G4 SHA256_GROUP(4, LEAF); SHA1_GROUP(5);                                             \
    MD5_G5 SHA256_GROUP(5, LEAF); SHA1_GROUP(6);                                             \
    MD5_G6 SHA256_GROUP(6, LEAF); SHA1_GROUP(7);                                             \
    MD5_G7 SHA256_GROUP(7, LEAF); SHA1_GROUP(8); SHA1_GROUP(9);                              \
    MD5_G8 SHA256_GROUP(8, LEAF); SHA1_GROUP(10);                                            \
    MD5_G9 SHA256_GROUP(9, LEAF); SHA1_GROUP(11);                                            \
    MD5_G10 SHA256_GROUP(10, LEAF); SHA1_GROUP(12);                                          \
    MD5_G11 SHA256_GROUP(11, LEAF); SHA1_GROUP(13); SHA1_GROUP(14);                          \
    MD5_G12 SHA256_GROUP(12, LEAF); SHA1_GROUP(15);                                          \
    MD5_G13 SHA256_GROUP(13, LEAF); SHA1_GROUP(16);                                          \
    MD5_G14 SHA256_GROUP(14, LEAF); SHA1_GROUP(17);                                          \
    MD5_G15 SHA256_GROUP(15, LEAF); SHA1_GROUP(18); SHA1_GROUP(19);                          \
    a += a0; b += b0; c += c0; d += d0;                                                      \
    E0 = _mm_sha1nexte_epu32(E0, e_save);                                                    \
    ABCD = _mm_add_epi32(ABCD, abcd_save);                                                   \
    F0 = _mm_add_epi32(F0, f0_save);                                                         \
    F1 = _mm_add_epi32(F1, f1_save);                                                         \
    if (LEAF) {                                                                              \
        L0 = _mm_add_epi32(L0, l0_save);                                                     \
        L1 = _mm_add_epi32(L1, l1_save);                                                     \
    }                                                                                        \
    (void)l0_save; (void)l1_save;
#endif /* STITCH_X86 */

static void put_be32(unsigned char *out, const uint32_t *w, int n)
{
    for (int i = 0; i < n; i++) {
        out[4 * i] = (unsigned char)(w[i] >> 24);
        out[4 * i + 1] = (unsigned char)(w[i] >> 16);
        out[4 * i + 2] = (unsigned char)(w[i] >> 8);
        out[4 * i + 3] = (unsigned char)w[i];
    }
}

typedef struct {
    PyObject_HEAD
    uint32_t md5[4];
    uint32_t sha1[5];
    uint32_t sha256[8];
    uint32_t leaf[8];
    unsigned long long total;      /* bytes fed */
    unsigned long long leaf_done;  /* bytes of the current leaf already in `leaf` */
    unsigned long long leaf_size;  /* 0: no leaves */
    unsigned char pend[64];        /* a block's worth of bytes not yet hashed */
    Py_ssize_t npend;
    int busy;                      /* an update is running (the GIL is released in it) */
    int finished;
} Stitched;

#if STITCH_X86
/* The SHA-256 padding of a leaf of `length` bytes whose whole blocks are in `s`, with
 * `tail` (< 64 bytes) still to come; writes the 32-byte digest. */
NI static void sha_finish(uint32_t *s, int words, unsigned long long length,
                          const unsigned char *tail, Py_ssize_t ntail, unsigned char *out)
{
    unsigned char buf[128];
    memset(buf, 0, sizeof buf);
    if (ntail) memcpy(buf, tail, (size_t)ntail);
    buf[ntail] = 0x80;
    Py_ssize_t n = ntail + 1 + 8 <= 64 ? 64 : 128;
    unsigned long long bits = length * 8;
    for (int i = 0; i < 8; i++) buf[n - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (Py_ssize_t off = 0; off < n; off += 64) {
        if (words == 5) sha1_block(s, buf + off);
        else sha256_block(s, buf + off);
    }
    put_be32(out, s, words);
}

/* Whole blocks into every stream; completed leaves' digests appended at *leaves. */
NI static void stitched_blocks(Stitched *st, const unsigned char *p, size_t nblocks,
                               unsigned char **leaves)
{
    uint32_t a = st->md5[0], b = st->md5[1], c = st->md5[2], d = st->md5[3];
    __m128i ABCD, E0, F0, F1, L0 = _mm_setzero_si128(), L1 = _mm_setzero_si128();
    sha1_load(st->sha1, &ABCD, &E0);
    sha256_load(st->sha256, &F0, &F1);
    if (st->leaf_size) {
        sha256_load(st->leaf, &L0, &L1);
        while (nblocks) {
            STITCHED_BODY(1)
            p += 64;
            nblocks--;
            st->leaf_done += 64;
            if (st->leaf_done == st->leaf_size) {
                uint32_t done[8];
                sha256_store(done, L0, L1);
                sha_finish(done, 8, st->leaf_size, NULL, 0, *leaves);
                *leaves += 32;
                st->leaf_done = 0;
                sha256_load(SHA256_IV, &L0, &L1);
            }
        }
        sha256_store(st->leaf, L0, L1);
    } else {
        while (nblocks) {
            STITCHED_BODY(0)
            p += 64;
            nblocks--;
        }
    }
    st->md5[0] = a; st->md5[1] = b; st->md5[2] = c; st->md5[3] = d;
    sha1_store(st->sha1, ABCD, E0);
    sha256_store(st->sha256, F0, F1);
}

static int cpu_has_sha_ni(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    if (!(ecx & bit_SSSE3) || !(ecx & bit_SSE4_1)) return 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return (ebx & (1u << 29)) != 0; /* CPUID.(EAX=7,ECX=0):EBX.SHA */
}
#else
static int cpu_has_sha_ni(void) { return 0; }
#endif

static int available = 0;

static int Stitched_init(Stitched *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"leaf_size", NULL};
    unsigned long long leaf_size = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|K", kwlist, &leaf_size)) return -1;
    if (!available) {
        PyErr_SetString(PyExc_RuntimeError, "stitched hashing needs an x86-64 CPU with SHA-NI");
        return -1;
    }
    if (leaf_size % 64) {
        PyErr_SetString(PyExc_ValueError, "leaf_size must be a multiple of 64 (or 0)");
        return -1;
    }
    memcpy(self->md5, MD5_IV, sizeof MD5_IV);
    memcpy(self->sha1, SHA1_IV, sizeof SHA1_IV);
    memcpy(self->sha256, SHA256_IV, sizeof SHA256_IV);
    memcpy(self->leaf, SHA256_IV, sizeof SHA256_IV);
    self->total = self->leaf_done = 0;
    self->leaf_size = leaf_size;
    self->npend = 0;
    self->busy = self->finished = 0;
    return 0;
}

#if STITCH_X86
/* Feed `len` bytes: complete the pending block, whole blocks straight from `data`, keep the
 * rest. Returns the number of leaf digests written at `leaves`. */
static size_t feed(Stitched *st, const unsigned char *data, size_t len, unsigned char *leaves)
{
    unsigned char *out = leaves;
    st->total += len;
    if (st->npend) {
        size_t take = 64 - (size_t)st->npend;
        if (take > len) take = len;
        memcpy(st->pend + st->npend, data, take);
        st->npend += (Py_ssize_t)take;
        data += take;
        len -= take;
        if (st->npend < 64) return 0;
        stitched_blocks(st, st->pend, 1, &out);
        st->npend = 0;
    }
    size_t whole = len / 64;
    if (whole) stitched_blocks(st, data, whole, &out);
    if (len % 64) {
        memcpy(st->pend, data + whole * 64, len % 64);
        st->npend = (Py_ssize_t)(len % 64);
    }
    return (size_t)(out - leaves) / 32;
}
#endif

static PyObject *Stitched_update(Stitched *self, PyObject *arg)
{
    Py_buffer view;
    if (self->finished) {
        PyErr_SetString(PyExc_ValueError, "update() after digests()");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (self->busy) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "update() from two threads at once");
        return NULL;
    }
    /* At most one leaf per leaf_size bytes, plus one completed by the pending block. */
    Py_ssize_t max_leaves = self->leaf_size
        ? (Py_ssize_t)((view.len + 64) / (Py_ssize_t)self->leaf_size) + 1 : 0;
    PyObject *leaves = PyBytes_FromStringAndSize(NULL, max_leaves * 32);
    if (leaves == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    size_t n = 0;
#if STITCH_X86
    self->busy = 1;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(leaves);
    if (view.len >= 4096) {
        Py_BEGIN_ALLOW_THREADS
        n = feed(self, (const unsigned char *)view.buf, (size_t)view.len, dst);
        Py_END_ALLOW_THREADS
    } else {
        n = feed(self, (const unsigned char *)view.buf, (size_t)view.len, dst);
    }
    self->busy = 0;
#endif
    PyBuffer_Release(&view);
    if ((Py_ssize_t)n * 32 != max_leaves * 32 && _PyBytes_Resize(&leaves, (Py_ssize_t)n * 32) < 0)
        return NULL;
    return leaves;
}

static PyObject *Stitched_digests(Stitched *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "digests() during update()");
        return NULL;
    }
    if (self->finished) {
        PyErr_SetString(PyExc_ValueError, "digests() called twice");
        return NULL;
    }
    self->finished = 1;
    unsigned char md5[16], sha1[20], sha256[32], leaf[32];
    int has_leaf = 0;
#if STITCH_X86
    /* MD5: little-endian length and output words. */
    unsigned char buf[128];
    memset(buf, 0, sizeof buf);
    if (self->npend) memcpy(buf, self->pend, (size_t)self->npend);
    buf[self->npend] = 0x80;
    Py_ssize_t n = self->npend + 1 + 8 <= 64 ? 64 : 128;
    unsigned long long bits = self->total * 8;
    for (int i = 0; i < 8; i++) buf[n - 8 + i] = (unsigned char)(bits >> (8 * i));
    for (Py_ssize_t off = 0; off < n; off += 64) md5_block(self->md5, buf + off);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) md5[4 * i + j] = (unsigned char)(self->md5[i] >> (8 * j));
    sha_finish(self->sha1, 5, self->total, self->pend, self->npend, sha1);
    sha_finish(self->sha256, 8, self->total, self->pend, self->npend, sha256);
    if (self->leaf_size && (self->leaf_done || self->npend)) {
        sha_finish(self->leaf, 8, self->leaf_done + (unsigned long long)self->npend,
                   self->pend, self->npend, leaf);
        has_leaf = 1;
    }
#endif
    PyObject *last = has_leaf ? PyBytes_FromStringAndSize((const char *)leaf, 32)
                              : Py_NewRef(Py_None);
    if (last == NULL) return NULL;
    return Py_BuildValue("y#y#y#N", md5, (Py_ssize_t)16, sha1, (Py_ssize_t)20, sha256,
                         (Py_ssize_t)32, last);
}

static PyMethodDef Stitched_methods[] = {
    {"update", (PyCFunction)Stitched_update, METH_O,
     "Feed bytes; returns the digests (32 bytes each) of the leaves completed by them."},
    {"digests", (PyCFunction)Stitched_digests, METH_NOARGS,
     "(md5, sha1, sha256, last partial leaf's digest or None), raw bytes; once."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject StitchedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fingerprints._stitch.Stitched",
    .tp_basicsize = sizeof(Stitched),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MD5, SHA-1, SHA-256 and SHA-256 leaves of one stream, in one interleaved pass.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Stitched_init,
    .tp_methods = Stitched_methods,
};

static struct PyModuleDef stitch_module = {
    PyModuleDef_HEAD_INIT, "_stitch",
    "Stitched MD5/SHA-1/SHA-256 (see fingerprints/_stitch.c for why).", -1, NULL};

PyMODINIT_FUNC PyInit__stitch(void)
{
    available = cpu_has_sha_ni();
    if (PyType_Ready(&StitchedType) < 0) return NULL;
    PyObject *m = PyModule_Create(&stitch_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Stitched", (PyObject *)&StitchedType) < 0 ||
        PyModule_AddObjectRef(m, "available", available ? Py_True : Py_False) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
