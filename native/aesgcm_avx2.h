/*
 * AES-GCM of SSH packets (RFC 5647) with VAES and VPCLMULQDQ on 256-bit
 * vectors, for CPUs that have them without AVX-512 (AMD Zen 3, Intel since
 * Alder Lake): two blocks per instruction, where Node's OpenSSL 3.0 runs
 * its AES-NI code one block per instruction.
 */
#ifndef AESGCM_AVX2_H
#define AESGCM_AVX2_H

#include <stddef.h>
#include <stdint.h>

/* Blocks hashed per step of the bulk loop, and so the powers of H kept. */
#define AESGCM_AVX2_STRIDE 16

typedef struct {
  /* The AES round keys (11 or 15). */
  _Alignas(32) uint8_t round_keys[15][16];
  int rounds;
  /* H^1..H^STRIDE, each divided by x, in GHASH's byte-reversed order:
     powers[i] is H^(i+1); the bulk loop loads them in pairs. */
  _Alignas(32) uint8_t powers[AESGCM_AVX2_STRIDE][16];
} aesgcm_avx2_key;

/* Whether this CPU (and kernel) runs the code: AVX2, VAES, VPCLMULQDQ. */
int aesgcm_avx2_supported(void);

/* Expands a 16- or 32-byte AES key; `key` must be 32-byte aligned. */
void aesgcm_avx2_init(aesgcm_avx2_key *key, const uint8_t *aes_key, size_t aes_key_len);

/*
 * One packet: `len` bytes from `in` to `out` (may be `in`), with the 4-byte
 * packet length as additional data; `len` is a multiple of 16 in SSH, and
 * need not be. The tag of the ciphertext goes to `tag`: the tag to send
 * (encrypt), or the one to compare with (decrypt). The IV is the caller's
 * to advance.
 */
void aesgcm_avx2_encrypt(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len, uint8_t tag[16]);
void aesgcm_avx2_decrypt(const aesgcm_avx2_key *key, const uint8_t iv[12], const uint8_t aad[4], uint8_t *out, const uint8_t *in, size_t len, uint8_t tag[16]);

#endif
