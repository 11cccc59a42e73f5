/*
 * AES-GCM with VAES and VPCLMULQDQ on 256-bit vectors (aesgcm_avx2.h).
 *
 * Why our own: the daemon decrypts and encrypts every byte it forwards, and
 * on a CPU with VAES but no AVX-512 its AES-GCM ran on OpenSSL 3.0's AES-NI
 * code (2.7 GiB/s per core on the AMD EPYC of bench/README.md, "AES-GCM on
 * VAES-AVX2"), half the daemon's CPU time. The VAES code of intel-ipsec-mb
 * 1.3 and of OpenSSL 3.0 (Debian 12's) needs AVX-512.
 * test/packetrelay.test.ts checks every byte and tag against OpenSSL's.
 *
 * The arithmetic. GHASH works in GF(2^128) mod P = x^128 + x^7 + x^2 + x + 1,
 * with the first bit of a block the coefficient of x^0. Reversing a block's
 * 16 bytes (BSWAP below) turns it into a 128-bit integer whose bit 127-i is
 * the coefficient of x^i: the field element "reflected". A carry-less
 * multiplication of two reflected values is the reflected product shifted
 * by one bit: clmul(ref A, ref B) = ref256(A B x). Hence:
 * - The key's powers of H are stored divided by x (div_x()), so that the
 *   product of a block and a stored power is ref256(A H^i) exactly.
 * - Reflected, reducing mod P means clearing the low 128 bits of the
 *   product by adding multiples of the reflected P, 1 + y^121 + y^126 +
 *   y^127 + y^128 (y = 1/x), whose low 64 bits are just 1: each 64-bit limb
 *   cancels with itself times P, that is one carry-less multiplication by
 *   y^57 + y^62 + y^63 (0xc200000000000000) and two XORs (reduce()). The
 *   high 128 bits are then the reflected remainder.
 * - Products are linear in their factors, so the 16 blocks of a step of
 *   the bulk loop, multiplied by H^16..H^1, are summed unreduced and
 *   reduced once (ghash_stride()).
 *
 * Every function that runs these instructions has the TARGET attribute;
 * the callers check aesgcm_avx2_supported() first.
 */
#include <string.h>

#include "aesgcm_avx2.h"

#ifdef __x86_64__
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,aes,pclmul,vaes,vpclmulqdq")))
/* For the data path: inlined into the one caller per key size, so that the round count is a constant and every loop below unrolls at -O2. */
#define INLINE TARGET __attribute__((always_inline)) static inline

/* Pairs of blocks per step of the bulk loop: a vector each. */
#define PAIRS (AESGCM_AVX2_STRIDE / 2)

/* y^57 + y^62 + y^63: the reflected P's terms between y^64 and y^128, shifted down by 64. */
#define REDUCTION_CONSTANT ((long long)0xc200000000000000ULL)

int aesgcm_avx2_supported(void) {
  __builtin_cpu_init();
  /* libgcc's "avx2" also checks that the kernel saves the 256-bit registers. */
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("vaes")
         && __builtin_cpu_supports("vpclmulqdq");
}

TARGET static inline __m128i bswap128(__m128i x) {
  return _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

/* Reverses the bytes of each 128-bit lane. */
TARGET static inline __m256i bswap256(__m256i x) {
  const __m128i mask = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm256_shuffle_epi8(x, _mm256_broadcastsi128_si256(mask));
}

/* ---- AES --------------------------------------------------------------- */

/* One step of the key schedule: `key` with its words chained, XOR the word aeskeygenassist made (`assist`, already spread). */
TARGET static inline __m128i schedule_step(__m128i key, __m128i assist) {
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  return _mm_xor_si128(key, assist);
}

/* FIPS 197's key expansion; aeskeygenassist's round constant must be an immediate, hence the unrolled calls. */
TARGET static void expand_key(__m128i *rk, const uint8_t *aes_key, size_t len) {
#define STEP128(i, rcon) rk[i] = schedule_step(rk[i - 1], _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff))
#define STEP256(i, rcon)                                                                                      \
  do {                                                                                                        \
    rk[i] = schedule_step(rk[i - 2], _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff));    \
    if (i + 1 < 15) rk[i + 1] = schedule_step(rk[i - 1], _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i], 0), 0xaa)); \
  } while (0)
  rk[0] = _mm_loadu_si128((const __m128i *)aes_key);
  if (len == 16) {
    STEP128(1, 0x01);
    STEP128(2, 0x02);
    STEP128(3, 0x04);
    STEP128(4, 0x08);
    STEP128(5, 0x10);
    STEP128(6, 0x20);
    STEP128(7, 0x40);
    STEP128(8, 0x80);
    STEP128(9, 0x1b);
    STEP128(10, 0x36);
    return;
  }
  rk[1] = _mm_loadu_si128((const __m128i *)(aes_key + 16));
  STEP256(2, 0x01);
  STEP256(4, 0x02);
  STEP256(6, 0x04);
  STEP256(8, 0x08);
  STEP256(10, 0x10);
  STEP256(12, 0x20);
  STEP256(14, 0x40);
#undef STEP128
#undef STEP256
}

INLINE __m128i aes_block(const aesgcm_avx2_key *key, __m128i x, const int rounds) {
  const __m128i *rk = (const __m128i *)key->round_keys;
  x = _mm_xor_si128(x, _mm_load_si128(&rk[0]));
#pragma GCC unroll 14
  for (int r = 1; r < rounds; r++) x = _mm_aesenc_si128(x, _mm_load_si128(&rk[r]));
  return _mm_aesenclast_si128(x, _mm_load_si128(&rk[rounds]));
}

/* ---- GHASH ------------------------------------------------------------- */

/* The high 128 bits of the reflected product (hi:lo) once its low 128 are cleared: the reflected product mod P. */
TARGET static inline __m128i reduce(__m128i hi, __m128i lo) {
  const __m128i poly = _mm_set_epi64x(0, REDUCTION_CONSTANT);
  const __m128i y = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), _mm_clmulepi64_si128(lo, poly, 0x00));
  const __m128i z = _mm_xor_si128(_mm_shuffle_epi32(y, 0x4e), _mm_clmulepi64_si128(y, poly, 0x00));
  return _mm_xor_si128(hi, z);
}

/* The 256-bit product's halves from its three parts: low, middle (shifted by 64) and high. */
TARGET static inline __m128i reduce_parts(__m128i lo, __m128i mid, __m128i hi) {
  return reduce(_mm_xor_si128(hi, _mm_srli_si128(mid, 8)), _mm_xor_si128(lo, _mm_slli_si128(mid, 8)));
}

/* a * b, both reflected, b a stored power (divided by x). */
TARGET static inline __m128i gf_mul(__m128i a, __m128i b) {
  const __m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01), _mm_clmulepi64_si128(a, b, 0x10));
  return reduce_parts(_mm_clmulepi64_si128(a, b, 0x00), mid, _mm_clmulepi64_si128(a, b, 0x11));
}

/* a / x mod P, reflected: a shift towards the top bit, and P folded back in if x^0 was set (top bit out). */
TARGET static inline __m128i div_x(__m128i a) {
  const __m128i carries = _mm_srli_epi64(a, 63); /* the top bit of each half */
  const __m128i shifted = _mm_or_si128(_mm_slli_epi64(a, 1), _mm_slli_si128(carries, 8));
  /* All ones if the top bit was set: no branch on a bit of the key. */
  const __m128i top = _mm_shuffle_epi32(_mm_srai_epi32(a, 31), 0xff);
  return _mm_xor_si128(shifted, _mm_and_si128(top, _mm_set_epi64x(REDUCTION_CONSTANT, 1)));
}

/* H^e / x, stored at powers[STRIDE - e]: the bulk loop multiplies the first block of a step by H^STRIDE. */
TARGET static inline __m128i power(const aesgcm_avx2_key *key, int exponent) {
  return _mm_load_si128((const __m128i *)key->powers[AESGCM_AVX2_STRIDE - exponent]);
}

/* The running hash `x` after one more block `b` (reflected). */
TARGET static inline __m128i ghash_block(const aesgcm_avx2_key *key, __m128i x, __m128i b) {
  return gf_mul(_mm_xor_si128(x, b), power(key, 1));
}

/* The running hash after a step's blocks, reflected, in pairs (b[0] holds the first two). */
INLINE __m128i ghash_stride(const aesgcm_avx2_key *key, __m128i x, const __m256i b[PAIRS]) {
  const __m256i *powers = (const __m256i *)key->powers;
  __m256i lo = _mm256_setzero_si256(), mid = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int j = 0; j < PAIRS; j++) {
    __m256i v = b[j];
    if (j == 0) v = _mm256_xor_si256(v, _mm256_set_m128i(_mm_setzero_si128(), x));
    const __m256i k = _mm256_load_si256(&powers[j]);
    lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128(v, k, 0x00));
    hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128(v, k, 0x11));
    mid = _mm256_xor_si256(mid, _mm256_xor_si256(_mm256_clmulepi64_epi128(v, k, 0x01), _mm256_clmulepi64_epi128(v, k, 0x10)));
  }
  const __m128i lo2 = _mm_xor_si128(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
  const __m128i mid2 = _mm_xor_si128(_mm256_castsi256_si128(mid), _mm256_extracti128_si256(mid, 1));
  const __m128i hi2 = _mm_xor_si128(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
  return reduce_parts(lo2, mid2, hi2);
}

/* ---- set-up ------------------------------------------------------------ */

TARGET void aesgcm_avx2_init(aesgcm_avx2_key *key, const uint8_t *aes_key, size_t aes_key_len) {
  __m128i rk[15];
  expand_key(rk, aes_key, aes_key_len);
  key->rounds = aes_key_len == 16 ? 10 : 14;
  for (int r = 0; r <= key->rounds; r++) _mm_store_si128((__m128i *)key->round_keys[r], rk[r]);
  /* H = AES(0); H^i by repeated multiplication by H (its stored form). */
  const __m128i h = bswap128(aes_block(key, _mm_setzero_si128(), key->rounds == 10 ? 10 : 14));
  const __m128i h_stored = div_x(h);
  __m128i hi = h;
  for (int i = 1; i <= AESGCM_AVX2_STRIDE; i++) {
    if (i > 1) hi = gf_mul(hi, h_stored);
    _mm_store_si128((__m128i *)key->powers[AESGCM_AVX2_STRIDE - i], div_x(hi));
  }
  explicit_bzero(rk, sizeof rk); /* a plain memset of a dead array may be left out */
}

/* ---- a packet ---------------------------------------------------------- */

/* AES of a step's pairs of counter blocks. */
INLINE void aes_stride(const aesgcm_avx2_key *key, __m256i s[PAIRS], const int rounds) {
  const __m128i *rk = (const __m128i *)key->round_keys;
  __m256i k = _mm256_broadcastsi128_si256(_mm_load_si128(&rk[0]));
#pragma GCC unroll 8
  for (int j = 0; j < PAIRS; j++) s[j] = _mm256_xor_si256(s[j], k);
#pragma GCC unroll 14
  for (int r = 1; r < rounds; r++) {
    k = _mm256_broadcastsi128_si256(_mm_load_si128(&rk[r]));
#pragma GCC unroll 8
    for (int j = 0; j < PAIRS; j++) s[j] = _mm256_aesenc_epi128(s[j], k);
  }
  k = _mm256_broadcastsi128_si256(_mm_load_si128(&rk[rounds]));
#pragma GCC unroll 8
  for (int j = 0; j < PAIRS; j++) s[j] = _mm256_aesenclast_epi128(s[j], k);
}

/*
 * Both directions: the keystream XOR `in` into `out`, and the hash of the
 * ciphertext (`in` when decrypting, `out` when encrypting). Counter blocks
 * are kept byte-reversed, so that the 32-bit block counter (big-endian at
 * the end of the block) is the low 32 bits of each lane for vpaddd.
 */
INLINE void gcm_packet(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len, uint8_t tag[16],
                       const int encrypt, const int rounds) {
  uint8_t j0_bytes[16];
  memcpy(j0_bytes, iv, 12);
  memcpy(j0_bytes + 12, "\0\0\0\1", 4);
  const __m128i j0 = bswap128(_mm_loadu_si128((const __m128i *)j0_bytes));

  uint8_t aad_block[16] = {0};
  memcpy(aad_block, aad, 4);
  __m128i x = ghash_block(key, _mm_setzero_si128(), bswap128(_mm_loadu_si128((const __m128i *)aad_block)));

  const size_t blocks = len / 16;
  size_t i = 0;
  if (blocks >= AESGCM_AVX2_STRIDE) {
    /* Lanes (j0 + 1, j0 + 2), (j0 + 3, j0 + 4), ...: the first data block counts 2. */
    const __m256i pair = _mm256_broadcastsi128_si256(j0);
    __m256i ctr = _mm256_add_epi32(pair, _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 1));
    const __m256i stride = _mm256_set_epi32(0, 0, 0, AESGCM_AVX2_STRIDE, 0, 0, 0, AESGCM_AVX2_STRIDE);
    for (; i + AESGCM_AVX2_STRIDE <= blocks; i += AESGCM_AVX2_STRIDE) {
      const __m256i *src = (const __m256i *)(in + 16 * i);
      __m256i *dst = (__m256i *)(out + 16 * i);
      __m256i s[PAIRS], data[PAIRS], hashed[PAIRS];
#pragma GCC unroll 8
      for (int j = 0; j < PAIRS; j++) {
        s[j] = bswap256(_mm256_add_epi32(ctr, _mm256_set_epi32(0, 0, 0, 2 * j, 0, 0, 0, 2 * j)));
        data[j] = _mm256_loadu_si256(&src[j]);
      }
      ctr = _mm256_add_epi32(ctr, stride);
      if (!encrypt)
#pragma GCC unroll 8
        for (int j = 0; j < PAIRS; j++) hashed[j] = bswap256(data[j]);
      aes_stride(key, s, rounds);
#pragma GCC unroll 8
      for (int j = 0; j < PAIRS; j++) {
        const __m256i result = _mm256_xor_si256(s[j], data[j]);
        _mm256_storeu_si256(&dst[j], result);
        if (encrypt) hashed[j] = bswap256(result);
      }
      x = ghash_stride(key, x, hashed);
    }
  }
  for (; i < blocks; i++) {
    const __m128i counter = bswap128(_mm_add_epi32(j0, _mm_set_epi32(0, 0, 0, (int)(i + 1))));
    const __m128i data = _mm_loadu_si128((const __m128i *)(in + 16 * i));
    const __m128i result = _mm_xor_si128(aes_block(key, counter, rounds), data);
    _mm_storeu_si128((__m128i *)(out + 16 * i), result);
    x = ghash_block(key, x, bswap128(encrypt ? result : data));
  }

  /* A last partial block (never in SSH, whose packets are whole blocks, but GCM allows it): hashed zero-padded. */
  const size_t rest = len % 16;
  if (rest != 0) {
    uint8_t data[16] = {0}, result[16];
    memcpy(data, in + 16 * blocks, rest);
    const __m128i counter = bswap128(_mm_add_epi32(j0, _mm_set_epi32(0, 0, 0, (int)(blocks + 1))));
    _mm_storeu_si128((__m128i *)result, _mm_xor_si128(aes_block(key, counter, rounds), _mm_loadu_si128((const __m128i *)data)));
    memset(result + rest, 0, sizeof result - rest);
    memcpy(out + 16 * blocks, result, rest);
    x = ghash_block(key, x, bswap128(_mm_loadu_si128((const __m128i *)(encrypt ? result : data))));
  }

  /* The lengths block: additional data and ciphertext in bits, 64-bit big-endian each; reflected, the ciphertext's is the low half. */
  x = ghash_block(key, x, _mm_set_epi64x(4 * 8, (long long)len * 8));
  const __m128i s = bswap128(x);
  _mm_storeu_si128((__m128i *)tag, _mm_xor_si128(s, aes_block(key, bswap128(j0), rounds)));
}

TARGET void aesgcm_avx2_encrypt(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len,
                                uint8_t tag[16]) {
  if (key->rounds == 10) gcm_packet(key, iv, aad, out, in, len, tag, 1, 10);
  else gcm_packet(key, iv, aad, out, in, len, tag, 1, 14);
}

TARGET void aesgcm_avx2_decrypt(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len,
                                uint8_t tag[16]) {
  if (key->rounds == 10) gcm_packet(key, iv, aad, out, in, len, tag, 0, 10);
  else gcm_packet(key, iv, aad, out, in, len, tag, 0, 14);
}

#else /* no such instructions: aesgcm_avx2_supported() says so, and nothing else is called */

int aesgcm_avx2_supported(void) {
  return 0;
}

void aesgcm_avx2_init(aesgcm_avx2_key *key, const uint8_t *aes_key, size_t aes_key_len) {
  (void)key, (void)aes_key, (void)aes_key_len;
}

void aesgcm_avx2_encrypt(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len, uint8_t tag[16]) {
  (void)key, (void)iv, (void)aad, (void)out, (void)in, (void)len, (void)tag;
}

void aesgcm_avx2_decrypt(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len, uint8_t tag[16]) {
  (void)key, (void)iv, (void)aad, (void)out, (void)in, (void)len, (void)tag;
}

#endif
