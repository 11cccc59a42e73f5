/*
 * The ciphers of both legs, and the loop that relays channel packets
 * from one leg to the other without a JavaScript call per packet.
 *
 * The ciphers are drop-in replacements for those of ssh2's own binding
 * (lib/protocol/crypto/src/binding.cc: same constructors, same methods, same
 * bytes on the wire; test/packetrelay.test.ts compares them). lib/ssh2internals.ts
 * hands them to ssh2 in place of its own, so that ssh2 (key exchange,
 * authentication, the packets the relay forwards one by one) and relay()
 * below advance one and the same cipher state. Besides the AEAD ciphers
 * they cover what the proxy offers of ssh2's generic ones: AES-CTR with
 * HMAC-SHA-1/256/512 at full length, encrypt-and-MAC or encrypt-then-MAC
 * (clients without AES-GCM: paramiko, older JSch and PuTTY). ssh2's own
 * class keeps any other (lib/ssh2internals.ts).
 *
 * relay() takes a socket chunk of one leg, at a packet boundary, and for each
 * whole packet in it: decrypts it into the output buffer, and if its message
 * type is one the relay forwards unchanged (a table from lib/relay.ts),
 * re-frames it there for the other leg (fresh padding for that leg's block
 * size) and encrypts it in place. It stops at the first packet of another
 * type (decrypted in the chunk, for the caller to dispatch), at an
 * incomplete packet (left for ssh2, which keeps partial packets), or when the
 * output buffer could not take the next packet. Per GiB of bulk data that is
 * ~33,000 calls into V8 fewer each way than ssh2's decipher, the relay's
 * route and ssh2's cipher made (bench/README.md, the native relay lever).
 *
 * Errors throw, with the messages ssh2 uses ("Bad packet length", "Invalid
 * MAC"): the leg then fails as it would have in ssh2.
 *
 * AES-GCM runs on the fastest code the CPU runs, since the daemon decrypts
 * and encrypts every byte:
 * - with AVX-512, VAES and VPCLMULQDQ, intel-ipsec-mb's where the build found
 *   it: 2.3-2.9x less time than the AES-NI code of Node's OpenSSL 3.0
 *   (9.2-11.6 against 4.0 GiB/s on one core of an Intel Xeon, 32 KiB
 *   packets; bench/README.md, "AES-GCM on VAES");
 * - with VAES and VPCLMULQDQ on AVX2 only (AMD Zen 3, Intel since Alder
 *   Lake), our own (aesgcm_avx2.c): bench/README.md, "AES-GCM on VAES-AVX2";
 * - elsewhere, and for ChaCha20-Poly1305, OpenSSL.
 * useAesGcm() picks one for ciphers made from then on (tests run each the
 * CPU has); aesGcmImplementation() names the one in use, for the start-up log.
 *
 * quickAck() is the one socket call the legs need that Node does not offer:
 * TCP_QUICKACK while a connection logs in (lib/quickack.ts).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#ifdef HAVE_IPSEC_MB
#include <intel-ipsec-mb.h>
#endif

#include "aesgcm_avx2.h"
#include "packetrelay.h"

#define POLY1305_KEYLEN 32
#define GCM_IV_LEN 12

#define CTR_BLOCK 16

typedef enum { KIND_GCM, KIND_CHACHA, KIND_CTR_HMAC } kind_t;

struct cipher {
  kind_t kind;
  int encrypt;
  unsigned block;   /* padding block: 16 for AES, 8 for ChaCha20-Poly1305 */
  unsigned mac_len; /* the tag or MAC after each packet */
  /* Bytes of the length field that count towards the block multiple: 4 where
     the cipher covers it (AES-CTR encrypt-and-MAC), 0 where it is additional
     data or in the clear. */
  unsigned length_in_blocks;
  int etm;                /* AES-CTR: encrypt-then-MAC */
  EVP_CIPHER_CTX *main;   /* AES-GCM, ChaCha20 with the main key, or AES-CTR */
  EVP_CIPHER_CTX *pktlen; /* ChaCha20 with the length key */
  EVP_MAC *mac;           /* Poly1305, or HMAC */
  EVP_MAC_CTX *mac_ctx;
  unsigned char enc_length[4]; /* ChaCha decipher: the encrypted length of the packet in hand */
  /* AES-CTR: the counter block where the next packet starts. Kept here, and
     set on `main` for each packet, so that reading a packet's length before
     the whole packet is in (relay_packets) does not move the stream on. */
  unsigned char ctr[CTR_BLOCK];
  /* AES-GCM on other code than `main`'s: the next IV, and the keys of that code (one of the two). */
  unsigned char iv[GCM_IV_LEN];
  aesgcm_avx2_key *avx2_keys;
#ifdef HAVE_IPSEC_MB
  struct gcm_key_data *gcm_keys; /* the expanded key and hash keys, 64-byte aligned */
  int aes256;
#endif
};

/* The AES-GCM code of a cipher, slowest first: useAesGcm()'s "best" is the last the CPU runs. */
typedef enum { GCM_OPENSSL, GCM_VAES_AVX2, GCM_IPSEC_MB } gcm_code_t;
/* What the CPU runs (measured at load), and what new ciphers get. */
static int gcm_runs[GCM_IPSEC_MB + 1];
static gcm_code_t gcm_in_use;

#ifdef HAVE_IPSEC_MB
/*
 * intel-ipsec-mb's VAES AVX-512 GCM functions, called directly: the library
 * exports them, and its header declares only the manager (IMB_MGR) that
 * dispatches to them. Setting up a manager (init_mb_mgr_auto) readies every
 * algorithm of the library and left 3.3 MiB of its code resident; these
 * functions alone touch 0.3 MiB. Same signatures as the manager's
 * aes_gcm_pre_t and aes_gcm_enc_dec_t.
 */
typedef void gcm_pre_fn(const void *key, struct gcm_key_data *key_data);
typedef void gcm_enc_dec_fn(const struct gcm_key_data *key_data, struct gcm_context_data *ctx, uint8_t *out, const uint8_t *in, uint64_t len,
                            const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, uint8_t *tag, uint64_t tag_len);
extern gcm_pre_fn aes_gcm_pre_128_vaes_avx512, aes_gcm_pre_256_vaes_avx512;
extern gcm_enc_dec_fn aes_gcm_enc_128_vaes_avx512, aes_gcm_dec_128_vaes_avx512, aes_gcm_enc_256_vaes_avx512, aes_gcm_dec_256_vaes_avx512;
#endif

/* Whether `a` has keys: set up and not freed. */
static int cipher_live(const cipher_t *a) {
  if (a->avx2_keys != NULL) return 1;
#ifdef HAVE_IPSEC_MB
  if (a->gcm_keys != NULL) return 1;
#endif
  return a->main != NULL;
}

/* Tags that tell our cipher objects from any other wrapped object. */
static const napi_type_tag CIPHER_TAG = {0x6a73702d72656c61ULL, 0x79636970686572ULL};
static const napi_type_tag DECIPHER_TAG = {0x6a73702d72656c61ULL, 0x7964656369706872ULL};

/* ---- the ciphers ------------------------------------------------------- */

static void cipher_clear(cipher_t *a) {
  EVP_CIPHER_CTX_free(a->main);
  EVP_CIPHER_CTX_free(a->pktlen);
  EVP_MAC_CTX_free(a->mac_ctx);
  EVP_MAC_free(a->mac);
  a->main = NULL;
  a->pktlen = NULL;
  a->mac_ctx = NULL;
  a->mac = NULL;
  if (a->avx2_keys != NULL) {
    OPENSSL_cleanse(a->avx2_keys, sizeof *a->avx2_keys);
    free(a->avx2_keys);
    a->avx2_keys = NULL;
  }
#ifdef HAVE_IPSEC_MB
  if (a->gcm_keys != NULL) {
    OPENSSL_cleanse(a->gcm_keys, sizeof *a->gcm_keys);
    free(a->gcm_keys);
    a->gcm_keys = NULL;
  }
#endif
}

/* 0 on success, else an error message. */
static const char *gcm_init(cipher_t *a, const char *name, const unsigned char *key, size_t key_len, const unsigned char *iv, size_t iv_len) {
  const EVP_CIPHER *cipher = EVP_get_cipherbyname(name);
  if (cipher == NULL || (cipher != EVP_aes_128_gcm() && cipher != EVP_aes_256_gcm())) return "Invalid AES GCM cipher name";
  if (iv_len != 12) return "Invalid IV length";
  if ((int)key_len != EVP_CIPHER_key_length(cipher)) return "Invalid keys length";
  a->kind = KIND_GCM;
  a->block = 16;
  a->mac_len = TAG_LEN;
  if (gcm_in_use == GCM_VAES_AVX2) {
    if ((a->avx2_keys = aligned_alloc(32, sizeof *a->avx2_keys)) == NULL) return "out of memory";
    aesgcm_avx2_init(a->avx2_keys, key, key_len);
    memcpy(a->iv, iv, GCM_IV_LEN);
    return NULL;
  }
#ifdef HAVE_IPSEC_MB
  if (gcm_in_use == GCM_IPSEC_MB) {
    if ((a->gcm_keys = aligned_alloc(64, sizeof *a->gcm_keys)) == NULL) return "out of memory";
    a->aes256 = cipher == EVP_aes_256_gcm();
    (a->aes256 ? aes_gcm_pre_256_vaes_avx512 : aes_gcm_pre_128_vaes_avx512)(key, a->gcm_keys);
    memcpy(a->iv, iv, GCM_IV_LEN);
    return NULL;
  }
#endif
  if ((a->main = EVP_CIPHER_CTX_new()) == NULL
      || EVP_CipherInit_ex(a->main, cipher, NULL, NULL, NULL, a->encrypt) != 1
      || !EVP_CIPHER_CTX_ctrl(a->main, EVP_CTRL_AEAD_SET_IVLEN, (int)iv_len, NULL)
      || EVP_CipherInit_ex(a->main, NULL, NULL, key, iv, a->encrypt) != 1
      || !EVP_CIPHER_CTX_ctrl(a->main, EVP_CTRL_GCM_SET_IV_FIXED, -1, (void *)iv))
    return "OpenSSL: AES-GCM set-up failed";
  EVP_CIPHER_CTX_set_padding(a->main, 0);
  return NULL;
}

static const char *chacha_init(cipher_t *a, const unsigned char *keys, size_t keys_len) {
  const EVP_CIPHER *cipher = EVP_chacha20();
  if (keys_len != 64) return "Invalid keys length";
  a->kind = KIND_CHACHA;
  a->block = 8;
  a->mac_len = TAG_LEN;
  if ((a->pktlen = EVP_CIPHER_CTX_new()) == NULL || (a->main = EVP_CIPHER_CTX_new()) == NULL
      || (a->mac = EVP_MAC_fetch(NULL, "POLY1305", "provider=default")) == NULL
      || (a->mac_ctx = EVP_MAC_CTX_new(a->mac)) == NULL
      || EVP_EncryptInit_ex(a->pktlen, cipher, NULL, keys + 32, NULL) != 1
      || EVP_EncryptInit_ex(a->main, cipher, NULL, keys, NULL) != 1)
    return "OpenSSL: ChaCha20-Poly1305 set-up failed";
  return NULL;
}

/* OpenSSH's ChaCha20 IV: a 64-bit block counter (only its low byte is ever set) and the 64-bit sequence number. */
static void chacha_iv(unsigned char iv[16], uint32_t seqno, unsigned char counter) {
  memset(iv, 0, 16);
  iv[0] = counter;
  iv[12] = (unsigned char)(seqno >> 24);
  iv[13] = (unsigned char)(seqno >> 16);
  iv[14] = (unsigned char)(seqno >> 8);
  iv[15] = (unsigned char)seqno;
}

static int chacha_stream(EVP_CIPHER_CTX *ctx, uint32_t seqno, unsigned char counter, unsigned char *out, const unsigned char *in, int len) {
  unsigned char iv[16];
  int outlen = 0;
  chacha_iv(iv, seqno, counter);
  return EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) == 1 && EVP_EncryptUpdate(ctx, out, &outlen, in, len) == 1 && outlen == len;
}

/* The Poly1305 tag over `len` bytes (ChaCha20 block 0 of the sequence number is its key). */
static int chacha_tag(cipher_t *a, uint32_t seqno, const unsigned char *p1, size_t l1, const unsigned char *p2, size_t l2, unsigned char tag[TAG_LEN]) {
  unsigned char polykey[POLY1305_KEYLEN] = {0};
  size_t tag_len = 0;
  int ok = chacha_stream(a->main, seqno, 0, polykey, polykey, sizeof polykey)
           && EVP_MAC_init(a->mac_ctx, polykey, sizeof polykey, NULL) == 1
           && EVP_MAC_update(a->mac_ctx, p1, l1) == 1
           && (l2 == 0 || EVP_MAC_update(a->mac_ctx, p2, l2) == 1)
           && EVP_MAC_final(a->mac_ctx, tag, &tag_len, TAG_LEN) == 1 && tag_len == TAG_LEN;
  OPENSSL_cleanse(polykey, sizeof polykey);
  return ok;
}

static uint32_t read_u32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void write_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* The HMACs taken, by the digest names ssh2 passes (its MAC_INFO sslName), with their whole lengths. */
static const struct {
  const char *digest;
  unsigned mac_len;
} HMACS[] = {{"sha1", 20}, {"sha256", 32}, {"sha512", 64}};

/*
 * The HMACS entry if the AES-CTR classes take `name` (an OpenSSL cipher
 * name) with `digest`, and for a decipher (mac_len >= 0) that MAC length on
 * the wire: whole MACs only, no hmac-*-96. Else -1: ssh2's own classes keep
 * those (CBC modes, MD5, truncated MACs), which the proxy does not offer.
 */
static int ctr_hmac_takes(const char *name, const char *digest, long mac_len) {
  const EVP_CIPHER *cipher = EVP_get_cipherbyname(name);
  if (cipher == NULL || (cipher != EVP_aes_128_ctr() && cipher != EVP_aes_192_ctr() && cipher != EVP_aes_256_ctr())) return -1;
  for (int d = 0; d < (int)(sizeof HMACS / sizeof *HMACS); d++) {
    if (strcmp(digest, HMACS[d].digest) == 0) return mac_len < 0 || (unsigned long)mac_len == HMACS[d].mac_len ? d : -1;
  }
  return -1;
}

/* AES-CTR with HMAC, as ssh2's GenericCipher/GenericDecipher take them: (cipher name, key, IV, digest name, MAC key, encrypt-then-MAC). */
static const char *ctr_hmac_init(cipher_t *a, const char *name, const unsigned char *key, size_t key_len, const unsigned char *iv, size_t iv_len,
                                 const char *digest, long mac_actual_len, const unsigned char *mac_key, size_t mac_key_len, int etm) {
  const int d = ctr_hmac_takes(name, digest, mac_actual_len);
  if (d < 0) return "Not an AES-CTR cipher with a whole HMAC";
  const EVP_CIPHER *cipher = EVP_get_cipherbyname(name);
  if (iv_len != CTR_BLOCK) return "Invalid IV length";
  if ((int)key_len != EVP_CIPHER_key_length(cipher)) return "Invalid keys length";
  a->kind = KIND_CTR_HMAC;
  a->block = CTR_BLOCK;
  a->etm = etm;
  a->length_in_blocks = etm ? 0 : 4;
  memcpy(a->ctr, iv, CTR_BLOCK);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)HMACS[d].digest, 0), OSSL_PARAM_construct_end()};
  if ((a->main = EVP_CIPHER_CTX_new()) == NULL || EVP_EncryptInit_ex(a->main, cipher, NULL, key, iv) != 1
      || (a->mac = EVP_MAC_fetch(NULL, "HMAC", "provider=default")) == NULL || (a->mac_ctx = EVP_MAC_CTX_new(a->mac)) == NULL
      || EVP_MAC_init(a->mac_ctx, mac_key, mac_key_len, params) != 1)
    return "OpenSSL: AES-CTR with HMAC set-up failed";
  a->mac_len = HMACS[d].mac_len;
  return NULL;
}

/* RFC 4344 §4: the counter is the IV read as one big-endian number, one step per block. */
static void ctr_advance(cipher_t *a, uint32_t bytes) {
  uint64_t carry = bytes / CTR_BLOCK;
  for (int i = CTR_BLOCK - 1; i >= 0 && carry != 0; i--) {
    carry += a->ctr[i];
    a->ctr[i] = (unsigned char)carry;
    carry >>= 8;
  }
}

/* AES-CTR of `len` bytes from the start of the next packet's stream; the counter stays (ctr_advance() moves it). */
static int ctr_from_packet_start(cipher_t *a, unsigned char *out, const unsigned char *in, uint32_t len) {
  int outlen = 0;
  return EVP_EncryptInit_ex(a->main, NULL, NULL, NULL, a->ctr) == 1 && EVP_EncryptUpdate(a->main, out, &outlen, in, (int)len) == 1 && outlen == (int)len;
}

/* The HMAC of the sequence number and `p1`, `p2` (RFC 4253 §6.4). */
static int hmac(cipher_t *a, uint32_t seqno, const unsigned char *p1, size_t l1, const unsigned char *p2, size_t l2, unsigned char *mac) {
  unsigned char seq[4];
  size_t mac_len = 0;
  write_u32(seq, seqno);
  /* No key: the context starts again from the one it has. */
  return EVP_MAC_init(a->mac_ctx, NULL, 0, NULL) == 1 && EVP_MAC_update(a->mac_ctx, seq, sizeof seq) == 1 && EVP_MAC_update(a->mac_ctx, p1, l1) == 1
         && (l2 == 0 || EVP_MAC_update(a->mac_ctx, p2, l2) == 1) && EVP_MAC_final(a->mac_ctx, mac, &mac_len, a->mac_len) == 1
         && mac_len == a->mac_len;
}

/* The bytes AES-CTR covers of a packet with this body length: a whole number of blocks, else 0. */
static uint32_t ctr_covered(const cipher_t *a, uint32_t body_len) {
  const uint32_t covered = a->length_in_blocks + body_len;
  return covered % CTR_BLOCK == 0 ? covered : 0;
}

/* RFC 5647 §7.1: the invocation counter, the IV's last 8 bytes, counts packets (big-endian). */
static void gcm_next_iv(unsigned char iv[GCM_IV_LEN]) {
  for (int i = GCM_IV_LEN - 1; i >= 4 && ++iv[i] == 0; i--) {
  }
}

/* As imb_gcm() below, on aesgcm_avx2.c. */
static void avx2_gcm(cipher_t *a, int encrypt, unsigned char *out, const unsigned char *in, uint32_t len, const unsigned char length[4], unsigned char tag[TAG_LEN]) {
  (encrypt ? aesgcm_avx2_encrypt : aesgcm_avx2_decrypt)(a->avx2_keys, a->iv, length, out, in, len, tag);
  gcm_next_iv(a->iv);
}

#ifdef HAVE_IPSEC_MB
/* AES-GCM of `in` into `out` (may be `in`), the packet length as additional data; `tag` = the tag (encrypt) or the expected tag (decrypt). */
static void imb_gcm(cipher_t *a, int encrypt, unsigned char *out, const unsigned char *in, uint32_t len, const unsigned char length[4], unsigned char tag[TAG_LEN]) {
  struct gcm_context_data ctx;
  gcm_enc_dec_fn *run = encrypt ? (a->aes256 ? aes_gcm_enc_256_vaes_avx512 : aes_gcm_enc_128_vaes_avx512)
                                 : (a->aes256 ? aes_gcm_dec_256_vaes_avx512 : aes_gcm_dec_128_vaes_avx512);
  run(a->gcm_keys, &ctx, out, in, len, a->iv, length, 4, tag, TAG_LEN);
  gcm_next_iv(a->iv);
}
#endif

/* Encrypts `uint32 length, body (length bytes), room for the tag or MAC` in place. */
static const char *encrypt_packet(cipher_t *a, unsigned char *packet, uint32_t body_len, uint32_t seqno) {
  int outlen = 0;
  if (a->kind == KIND_CTR_HMAC) {
    const uint32_t covered = ctr_covered(a, body_len);
    unsigned char *mac = packet + 4 + body_len;
    unsigned char *start = packet + 4 - a->length_in_blocks;
    if (covered == 0) return "AES-CTR: a packet of part of a block";
    /* Encrypt-then-MAC covers the ciphertext, encrypt-and-MAC the plaintext. */
    if (a->etm ? !ctr_from_packet_start(a, start, start, covered) || !hmac(a, seqno, packet, 4 + body_len, NULL, 0, mac)
               : !hmac(a, seqno, packet, 4 + body_len, NULL, 0, mac) || !ctr_from_packet_start(a, start, start, covered))
      return "OpenSSL: AES-CTR with HMAC encryption failed";
    ctr_advance(a, covered);
    return NULL;
  }
  if (a->kind == KIND_GCM) {
    if (a->avx2_keys != NULL) {
      avx2_gcm(a, 1, packet + 4, packet + 4, body_len, packet, packet + 4 + body_len);
      return NULL;
    }
#ifdef HAVE_IPSEC_MB
    if (a->gcm_keys != NULL) {
      imb_gcm(a, 1, packet + 4, packet + 4, body_len, packet, packet + 4 + body_len);
      return NULL;
    }
#endif
    unsigned char lastiv[1];
    if (!EVP_CIPHER_CTX_ctrl(a->main, EVP_CTRL_GCM_IV_GEN, 1, lastiv)
        || EVP_EncryptUpdate(a->main, NULL, &outlen, packet, 4) != 1
        || EVP_EncryptUpdate(a->main, packet + 4, &outlen, packet + 4, (int)body_len) != 1 || outlen != (int)body_len
        || EVP_EncryptFinal_ex(a->main, NULL, &outlen) != 1
        || EVP_CIPHER_CTX_ctrl(a->main, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, packet + 4 + body_len) != 1)
      return "OpenSSL: AES-GCM encryption failed";
    return NULL;
  }
  if (!chacha_stream(a->pktlen, seqno, 0, packet, packet, 4)
      || !chacha_stream(a->main, seqno, 1, packet + 4, packet + 4, (int)body_len)
      || !chacha_tag(a, seqno, packet, 4 + body_len, NULL, 0, packet + 4 + body_len))
    return "OpenSSL: ChaCha20-Poly1305 encryption failed";
  return NULL;
}

/* ChaCha only: the packet length from its 4 encrypted bytes, which are kept for the tag. */
static uint32_t chacha_length(cipher_t *a, const unsigned char *enc_length, uint32_t seqno, const char **error) {
  unsigned char plain[4];
  memcpy(a->enc_length, enc_length, 4);
  if (!chacha_stream(a->pktlen, seqno, 0, plain, enc_length, 4)) {
    *error = "OpenSSL: ChaCha20 failed";
    return 0;
  }
  return read_u32(plain);
}

/* AEAD only: decrypts and authenticates a packet's body (the bytes after the length) into `out`: `body` itself, or memory that does not overlap it. */
static const char *aead_decrypt(cipher_t *a, unsigned char *out, const unsigned char *body, uint32_t body_len, uint32_t seqno, const unsigned char *tag) {
  int outlen = 0;
  if (a->kind == KIND_GCM) {
    unsigned char lastiv[1];
    unsigned char length[4] = {(unsigned char)(body_len >> 24), (unsigned char)(body_len >> 16), (unsigned char)(body_len >> 8), (unsigned char)body_len};
    if (a->avx2_keys != NULL) {
      unsigned char expected[TAG_LEN];
      avx2_gcm(a, 0, out, body, body_len, length, expected);
      return CRYPTO_memcmp(expected, tag, TAG_LEN) == 0 ? NULL : "Invalid MAC";
    }
#ifdef HAVE_IPSEC_MB
    if (a->gcm_keys != NULL) {
      unsigned char expected[TAG_LEN];
      imb_gcm(a, 0, out, body, body_len, length, expected);
      return CRYPTO_memcmp(expected, tag, TAG_LEN) == 0 ? NULL : "Invalid MAC";
    }
#endif
    if (!EVP_CIPHER_CTX_ctrl(a->main, EVP_CTRL_GCM_IV_GEN, 1, lastiv)
        || EVP_DecryptUpdate(a->main, NULL, &outlen, length, 4) != 1
        || EVP_DecryptUpdate(a->main, out, &outlen, body, (int)body_len) != 1 || outlen != (int)body_len
        || EVP_CIPHER_CTX_ctrl(a->main, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, (void *)tag) != 1)
      return "OpenSSL: AES-GCM decryption failed";
    if (EVP_DecryptFinal_ex(a->main, NULL, &outlen) != 1) return "Invalid MAC";
    return NULL;
  }
  unsigned char expected[TAG_LEN];
  if (!chacha_tag(a, seqno, a->enc_length, 4, body, body_len, expected)) return "OpenSSL: Poly1305 failed";
  if (CRYPTO_memcmp(expected, tag, TAG_LEN) != 0) return "Invalid MAC";
  if (!chacha_stream(a->main, seqno, 1, out, body, (int)body_len)) return "OpenSSL: ChaCha20 failed";
  return NULL;
}

/* AES-CTR only: the packet length from the first block of a packet, the stream left where it is. */
static uint32_t ctr_length(cipher_t *a, const unsigned char *packet, const char **error) {
  unsigned char plain[4];
  if (a->etm) return read_u32(packet);
  if (!ctr_from_packet_start(a, plain, packet, sizeof plain)) {
    *error = "OpenSSL: AES-CTR failed";
    return 0;
  }
  return read_u32(plain);
}

/*
 * AES-CTR with HMAC: decrypts and checks the body of a packet, `body_len`
 * bytes from `in` into `out` (`in` itself, or not overlapping it), given
 * its length field in the clear and its MAC. Encrypt-and-MAC: the stream
 * has just decrypted the length (ctr_from_packet_start over those 4 bytes).
 */
static const char *ctr_hmac_decrypt(cipher_t *a, unsigned char *out, const unsigned char *in, uint32_t body_len, uint32_t seqno, const unsigned char length[4],
                                    const unsigned char *mac) {
  unsigned char expected[MAX_MAC_LEN];
  int outlen = 0;
  const uint32_t covered = ctr_covered(a, body_len);
  if (covered == 0) return "Bad packet length";
  if (a->etm) {
    if (!hmac(a, seqno, length, 4, in, body_len, expected)) return "OpenSSL: HMAC failed";
    if (CRYPTO_memcmp(expected, mac, a->mac_len) != 0) return "Invalid MAC";
    if (!ctr_from_packet_start(a, out, in, body_len)) return "OpenSSL: AES-CTR failed";
  } else {
    if (EVP_EncryptUpdate(a->main, out, &outlen, in, (int)body_len) != 1 || outlen != (int)body_len) return "OpenSSL: AES-CTR failed";
    if (!hmac(a, seqno, length, 4, out, body_len, expected)) return "OpenSSL: HMAC failed";
    if (CRYPTO_memcmp(expected, mac, a->mac_len) != 0) return "Invalid MAC";
  }
  ctr_advance(a, covered);
  return NULL;
}

/* Decrypts and authenticates a whole packet on the wire (`in`: length, body, tag or MAC), its body into out + 4 (not overlapping `in`). */
static const char *decrypt_packet(cipher_t *a, unsigned char *out, const unsigned char *in, uint32_t body_len, uint32_t seqno) {
  if (a->kind != KIND_CTR_HMAC) return aead_decrypt(a, out + 4, in + 4, body_len, seqno, in + 4 + body_len);
  unsigned char length[4];
  /* Encrypt-and-MAC: the length once more (body_length() read it and left
     the stream where it was), which puts the stream right after it: one
     block per packet, and nothing here depends on what ran before. */
  if (a->etm) memcpy(length, in, sizeof length);
  else if (!ctr_from_packet_start(a, length, in, sizeof length)) return "OpenSSL: AES-CTR failed";
  return ctr_hmac_decrypt(a, out + 4, in + 4, body_len, seqno, length, in + 4 + body_len);
}

/* ---- N-API plumbing ---------------------------------------------------- */

napi_value throw_error(napi_env env, const char *message) {
  ERR_clear_error();
  napi_throw_error(env, NULL, message);
  return NULL;
}

static void cipher_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  cipher_clear(data);
  free(data);
}

/* The cipher_t of `object` if it is one of ours in `encrypt` direction and not freed; else throws. */
cipher_t *unwrap(napi_env env, napi_value object, int encrypt) {
  bool tagged = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, object, encrypt ? &CIPHER_TAG : &DECIPHER_TAG, &tagged) != napi_ok || !tagged
      || napi_unwrap(env, object, &data) != napi_ok) {
    throw_error(env, encrypt ? "not a packetrelay cipher" : "not a packetrelay decipher");
    return NULL;
  }
  cipher_t *a = data;
  if (!cipher_live(a)) {
    throw_error(env, "cipher used after free()");
    return NULL;
  }
  return a;
}

int get_buffer(napi_env env, napi_value value, unsigned char **data, size_t *len) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return 0;
  return napi_get_buffer_info(env, value, (void **)data, len) == napi_ok;
}

int get_u32(napi_env env, napi_value value, uint32_t *out) {
  return napi_get_value_uint32(env, value, out) == napi_ok;
}

/* Constructor flags: bit 0 a cipher (else a decipher), then the kind. */
enum { CLASS_ENCRYPT = 1, CLASS_CHACHA = 2, CLASS_CTR_HMAC = 4 };

/*
 * new (AESGCMCipher|AESGCMDecipher)(name, key, iv),
 * new (ChaChaPolyCipher|ChaChaPolyDecipher)(keys),
 * new CtrHmacCipher(name, key, iv, digest, macKey, etm),
 * new CtrHmacDecipher(name, key, iv, digest, macKey, etm, macActualLen)
 */
static napi_value construct(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], self;
  void *flags;
  napi_get_cb_info(env, info, &argc, argv, &self, &flags);
  const intptr_t f = (intptr_t)flags;
  cipher_t *a = calloc(1, sizeof *a);
  if (a == NULL) return throw_error(env, "out of memory");
  a->encrypt = (int)(f & CLASS_ENCRYPT);
  const char *error;
  unsigned char *key, *iv, *mac_key;
  size_t key_len, iv_len, mac_key_len;
  char name[32], digest[16];
  bool etm = false;
  uint32_t mac_actual_len = 0;
  if (f & CLASS_CHACHA) {
    error = argc >= 1 && get_buffer(env, argv[0], &key, &key_len) ? chacha_init(a, key, key_len) : "Missing/Invalid keys";
  } else if (argc < 3 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, NULL) != napi_ok) {
    error = "Missing/Invalid OpenSSL cipher name";
  } else if (!get_buffer(env, argv[1], &key, &key_len)) {
    error = "Missing/Invalid key";
  } else if (!get_buffer(env, argv[2], &iv, &iv_len)) {
    error = "Missing/Invalid iv";
  } else if (!(f & CLASS_CTR_HMAC)) {
    error = gcm_init(a, name, key, key_len, iv, iv_len);
  } else if (argc < 6 || napi_get_value_string_utf8(env, argv[3], digest, sizeof digest, NULL) != napi_ok) {
    error = "Missing/Invalid HMAC name";
  } else if (!get_buffer(env, argv[4], &mac_key, &mac_key_len)) {
    error = "Missing/Invalid HMAC key";
  } else if (napi_get_value_bool(env, argv[5], &etm) != napi_ok) {
    error = "Missing/Invalid HMAC ETM flag";
  } else if (!a->encrypt && (argc < 7 || !get_u32(env, argv[6], &mac_actual_len))) {
    error = "Missing/Invalid HMAC length";
  } else {
    error = ctr_hmac_init(a, name, key, key_len, iv, iv_len, digest, a->encrypt ? -1 : (long)mac_actual_len, mac_key, mac_key_len, etm);
  }
  if (error != NULL || napi_wrap(env, self, a, cipher_finalize, NULL, NULL) != napi_ok) {
    cipher_clear(a);
    free(a);
    return throw_error(env, error != NULL ? error : "napi_wrap failed");
  }
  napi_type_tag_object(env, self, a->encrypt ? &CIPHER_TAG : &DECIPHER_TAG);
  return self;
}

static napi_value method_free(napi_env env, napi_callback_info info) {
  napi_value self;
  void *data = NULL;
  napi_get_cb_info(env, info, NULL, NULL, &self, NULL);
  if (napi_unwrap(env, self, &data) == napi_ok) cipher_clear(data);
  return NULL;
}

/* AES-GCM: encrypt(packet); the others: encrypt(packet, seqno). `packet` = length, body, room for the tag or MAC. */
static napi_value method_encrypt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  unsigned char *packet;
  size_t len;
  uint32_t seqno = 0;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  cipher_t *a = unwrap(env, self, 1);
  if (a == NULL) return NULL;
  if (argc < 1 || !get_buffer(env, argv[0], &packet, &len) || len < 4 + a->mac_len) return throw_error(env, "Missing/Invalid packet");
  if (a->kind != KIND_GCM && (argc < 2 || !get_u32(env, argv[1], &seqno))) return throw_error(env, "Missing/Invalid sequence number");
  const char *error = encrypt_packet(a, packet, (uint32_t)(len - 4 - a->mac_len), seqno);
  return error ? throw_error(env, error) : NULL;
}

/* ChaCha20-Poly1305: decryptLen(lengthBytes, seqno) → the packet length. */
static napi_value method_decrypt_len(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self, result;
  unsigned char *bytes;
  size_t len;
  uint32_t seqno;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  cipher_t *a = unwrap(env, self, 0);
  if (a == NULL) return NULL;
  if (a->kind != KIND_CHACHA) return throw_error(env, "decryptLen is for ChaCha20-Poly1305");
  if (argc < 2 || !get_buffer(env, argv[0], &bytes, &len) || len != 4 || !get_u32(env, argv[1], &seqno)) return throw_error(env, "Missing/Invalid arguments");
  const char *error = NULL;
  uint32_t length = chacha_length(a, bytes, seqno, &error);
  if (error) return throw_error(env, error);
  napi_create_uint32(env, length, &result);
  return result;
}

/*
 * AES-CTR, ssh2's way: decryptBlock(block) decrypts the packet's first 4
 * bytes, the length (encrypt-and-MAC only); decrypt(body, seqno, length, mac)
 * the rest, in place. ssh2's GenericDecipherBinding calls them in that order.
 */
static napi_value method_decrypt_block(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  unsigned char *block;
  size_t len;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  cipher_t *a = unwrap(env, self, 0);
  if (a == NULL) return NULL;
  if (a->kind != KIND_CTR_HMAC || a->etm) return throw_error(env, "decryptBlock is for AES-CTR encrypt-and-MAC");
  if (argc < 1 || !get_buffer(env, argv[0], &block, &len) || len != 4) return throw_error(env, "Invalid block length");
  return ctr_from_packet_start(a, block, block, (uint32_t)len) ? NULL : throw_error(env, "OpenSSL: AES-CTR failed");
}

/* AES-GCM: decrypt(body, length, tag); ChaCha20-Poly1305: decrypt(body, tag, seqno); AES-CTR: above. In place; throws on a bad tag or MAC. */
static napi_value method_decrypt(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], self;
  unsigned char *body, *tag;
  size_t body_len, tag_len;
  uint32_t length = 0, seqno = 0;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  cipher_t *a = unwrap(env, self, 0);
  if (a == NULL) return NULL;
  if (argc < 3 || !get_buffer(env, argv[0], &body, &body_len)) return throw_error(env, "Missing/Invalid packet");
  if (a->kind == KIND_CTR_HMAC) {
    unsigned char *first;
    size_t first_len;
    if (argc < 4 || !get_u32(env, argv[1], &seqno) || !get_buffer(env, argv[2], &first, &first_len) || first_len != 4
        || !get_buffer(env, argv[3], &tag, &tag_len) || tag_len != a->mac_len)
      return throw_error(env, "Missing/Invalid arguments");
    const char *error = ctr_hmac_decrypt(a, body, body, (uint32_t)body_len, seqno, first, tag);
    return error ? throw_error(env, error) : NULL;
  }
  if (a->kind == KIND_GCM) {
    if (!get_u32(env, argv[1], &length) || length > body_len || !get_buffer(env, argv[2], &tag, &tag_len) || tag_len != TAG_LEN)
      return throw_error(env, "Missing/Invalid arguments");
  } else {
    if (!get_buffer(env, argv[1], &tag, &tag_len) || tag_len != TAG_LEN || !get_u32(env, argv[2], &seqno)) return throw_error(env, "Missing/Invalid arguments");
    length = (uint32_t)body_len;
  }
  const char *error = aead_decrypt(a, body, body, length, seqno, tag);
  return error ? throw_error(env, error) : NULL;
}

/* ---- the relay loop ---------------------------------------------------- */


/* Random padding bytes, drawn in blocks and each handed out once (as lib/packetbuffers.ts does). */
static unsigned char random_pool[16384];
static size_t random_used = sizeof random_pool;

static int fill_random(unsigned char *out, size_t len) {
  if (random_used + len > sizeof random_pool) {
    if (RAND_bytes(random_pool, sizeof random_pool) != 1) return 0;
    random_used = 0;
  }
  memcpy(out, random_pool + random_used, len);
  random_used += len;
  return 1;
}

/* The body length of the packet whose 4 length bytes are at `bytes`, checked as ssh2 does; sets *error if bad. */
static uint32_t body_length(cipher_t *dec, const unsigned char *bytes, uint32_t seqno, const char **error) {
  uint32_t len;
  int bad;
  switch (dec->kind) {
    case KIND_GCM:
      len = read_u32(bytes);
      bad = len + 20 > MAX_PACKET_SIZE || len < 16 || (len & 15) != 0;
      break;
    case KIND_CHACHA:
      len = chacha_length(dec, bytes, seqno, error);
      bad = len > MAX_PACKET_SIZE || len < 8 || (len & 7) != 0;
      break;
    default:
      len = ctr_length(dec, bytes, error);
      bad = len > MAX_PACKET_SIZE || len < 5 || ctr_covered(dec, len) == 0;
  }
  if (*error == NULL && bad) *error = "Bad packet length";
  return len;
}

/*
 * The relay loop: for each whole packet of chunk[start, end), decrypts it
 * into out[out_start, out_len) and, if its type is forwarded unchanged,
 * re-frames and encrypts it there; a packet of another type ends the loop
 * decrypted in place in the chunk. `chunk` and `out` must not overlap.
 * Returns NULL or an error message (the result then says nothing).
 */
const char *relay_packets(unsigned char *chunk, size_t start, size_t end, cipher_t *dec, uint32_t in_seqno, cipher_t *enc, uint32_t out_seqno,
                                 const unsigned char *forwarded, unsigned char *out, size_t out_start, size_t out_len, relay_result_t *result) {
  size_t p = start, o = out_start;
  uint32_t relayed = 0;
  int stop = STOP_END;
  const char *error = NULL;
  result->after = 0;
  while (end - p >= 4) {
    const uint32_t seqno = in_seqno + relayed;
    const uint32_t len = body_length(dec, chunk + p, seqno, &error);
    if (error) return error;
    const size_t wire = 4 + (size_t)len + dec->mac_len;
    if (end - p < wire) break; /* incomplete: the caller keeps it */
    /* The re-framed packet is at most one padding block longer. */
    if (out_len - o < 4 + (size_t)len + enc->block + enc->mac_len) {
      stop = STOP_OUTPUT_FULL;
      break;
    }
    unsigned char *body = chunk + p + 4;
    unsigned char *packet = out + o;
    /* Decrypted straight into the output packet: the payload has the same
       place in both frames (after the padding length byte), so it is not
       copied, and only the padding changes. */
    if ((error = decrypt_packet(dec, packet, chunk + p, len, seqno)) != NULL) return error;
    const uint32_t padding = packet[4];
    if (padding + 1 > len) return "Bad padding length";
    const uint32_t payload_len = len - padding - 1;
    if (payload_len == 0 || !forwarded[packet[5]]) {
      /* The caller dispatches it from the chunk, as if decrypted in place. */
      write_u32(chunk + p, len);
      memcpy(body, packet + 4, len);
      stop = STOP_OTHER_TYPE;
      result->after = p + wire;
      break;
    }
    /* RFC 4253 §6: at least 4 bytes of padding; the body, and the length
       where the cipher covers it, a multiple of the block. */
    uint32_t out_padding = enc->block - ((enc->length_in_blocks + 1 + payload_len) & (enc->block - 1));
    if (out_padding < 4) out_padding += enc->block;
    const uint32_t out_body = 1 + payload_len + out_padding;
    write_u32(packet, out_body);
    packet[4] = (unsigned char)out_padding;
    if (!fill_random(packet + 5 + payload_len, out_padding)) return "OpenSSL: no random bytes";
    if ((error = encrypt_packet(enc, packet, out_body, out_seqno + relayed)) != NULL) return error;
    o += 4 + out_body + enc->mac_len;
    p += wire;
    relayed++;
  }
  result->next = p;
  result->out_end = o;
  result->relayed = relayed;
  result->stop = stop;
  return NULL;
}

/*
 * relay(chunk, start, end, decipher, inSeqno, cipher, outSeqno, forwarded, out, outStart, result)
 *   forwarded: a 256-byte table, non-zero for message types relayed unchanged
 *   result (Float64Array): [0] where the chunk's next packet starts,
 *     [1] the end of the output written, [2] packets relayed,
 *     [3] why it stopped (STOP_*), and for STOP_OTHER_TYPE:
 *     [4] where the packet after that one starts (that one is decrypted
 *     in place at [0], its length field in the clear).
 */
static napi_value relay(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  unsigned char *chunk, *forwarded, *out;
  size_t chunk_len, forwarded_len, out_len, result_len;
  uint32_t start, end, in_seqno, out_seqno, out_start;
  void *result_data;
  napi_typedarray_type result_type;
  if (argc < 11 || !get_buffer(env, argv[0], &chunk, &chunk_len) || !get_u32(env, argv[1], &start) || !get_u32(env, argv[2], &end)
      || !get_u32(env, argv[4], &in_seqno) || !get_u32(env, argv[6], &out_seqno)
      || !get_buffer(env, argv[7], &forwarded, &forwarded_len) || forwarded_len != 256
      || !get_buffer(env, argv[8], &out, &out_len) || !get_u32(env, argv[9], &out_start)
      || napi_get_typedarray_info(env, argv[10], &result_type, &result_len, &result_data, NULL, NULL) != napi_ok
      || result_type != napi_float64_array || result_len < 5 || end > chunk_len || start > end || out_start > out_len
      || (out < chunk + chunk_len && chunk < out + out_len))
    return throw_error(env, "relay: invalid arguments");
  cipher_t *dec = unwrap(env, argv[3], 0);
  if (dec == NULL) return NULL;
  cipher_t *enc = unwrap(env, argv[5], 1);
  if (enc == NULL) return NULL;
  double *result = result_data;
  relay_result_t r;
  const char *error = relay_packets(chunk, start, end, dec, in_seqno, enc, out_seqno, forwarded, out, out_start, out_len, &r);
  if (error) return throw_error(env, error);
  result[0] = (double)r.next;
  result[1] = (double)r.out_end;
  result[2] = r.relayed;
  result[3] = r.stop;
  if (r.stop == STOP_OTHER_TYPE) result[4] = (double)r.after;
  return NULL;
}

/* ---- module ------------------------------------------------------------ */

static napi_value define(napi_env env, const char *name, intptr_t flags) {
  const int encrypt = flags & CLASS_ENCRYPT;
  napi_property_descriptor methods[] = {
      {"free", NULL, method_free, NULL, NULL, NULL, napi_default_method, NULL},
      {encrypt ? "encrypt" : "decrypt", NULL, encrypt ? method_encrypt : method_decrypt, NULL, NULL, NULL, napi_default_method, NULL},
      /* Deciphers only, as in ssh2's binding: ChaCha20-Poly1305 reads the length apart, AES-CTR the first block. */
      {(flags & CLASS_CHACHA) ? "decryptLen" : "decryptBlock", NULL, (flags & CLASS_CHACHA) ? method_decrypt_len : method_decrypt_block, NULL, NULL, NULL,
       napi_default_method, NULL},
  };
  const size_t count = !encrypt && (flags & (CLASS_CHACHA | CLASS_CTR_HMAC)) ? 3 : 2;
  napi_value cls;
  napi_define_class(env, name, NAPI_AUTO_LENGTH, construct, (void *)flags, count, methods, &cls);
  return cls;
}

/*
 * quickAck(fd): TCP_QUICKACK on a connected TCP socket, so that the kernel
 * acknowledges what was read now rather than up to 40 ms later
 * (lib/quickack.ts says why). False if the socket would not take it.
 */
static napi_value quick_ack(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "quickAck: a file descriptor");
    return NULL;
  }
  const int on = 1;
  napi_value done;
  napi_get_boolean(env, setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on) == 0, &done);
  return done;
}

/* ctrHmacTakes(cipherName, digestName[, macLength]): whether CtrHmacCipher (no length) or CtrHmacDecipher takes them (ctr_hmac_takes). */
static napi_value ctr_hmac_takes_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  char name[32] = "", digest[16] = "";
  uint32_t mac_len = 0;
  napi_valuetype third = napi_undefined;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 3) napi_typeof(env, argv[2], &third);
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, NULL) != napi_ok
      || napi_get_value_string_utf8(env, argv[1], digest, sizeof digest, NULL) != napi_ok
      || (third != napi_undefined && !get_u32(env, argv[2], &mac_len))) {
    napi_throw_type_error(env, NULL, "ctrHmacTakes: (cipher name, digest name[, MAC length])");
    return NULL;
  }
  napi_get_boolean(env, ctr_hmac_takes(name, digest, third == napi_undefined ? -1 : (long)mac_len) >= 0, &result);
  return result;
}

/* The AES-GCM code new ciphers get: a name for the start-up log. */
static napi_value aes_gcm_implementation(napi_env env, napi_callback_info info) {
  (void)info;
  char name[96] = "OpenSSL";
  if (gcm_in_use == GCM_VAES_AVX2) snprintf(name, sizeof name, "VAES-AVX2 (native/aesgcm_avx2.c)");
#ifdef HAVE_IPSEC_MB
  if (gcm_in_use == GCM_IPSEC_MB) snprintf(name, sizeof name, "intel-ipsec-mb %s (VAES)", imb_get_version_str());
#endif
  napi_value result;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &result);
  return result;
}

/* The fastest AES-GCM code this CPU runs. */
static gcm_code_t gcm_best(void) {
  gcm_code_t best = GCM_OPENSSL;
  for (gcm_code_t code = GCM_OPENSSL; code <= GCM_IPSEC_MB; code++)
    if (gcm_runs[code]) best = code;
  return best;
}

/* useAesGcm("best" | "openssl" | "vaes-avx2"): the AES-GCM code for ciphers made from now on; returns aesGcmImplementation(). */
static napi_value use_aes_gcm(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char which[16] = "";
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], which, sizeof which, NULL) != napi_ok
      || (strcmp(which, "openssl") != 0 && strcmp(which, "best") != 0 && strcmp(which, "vaes-avx2") != 0)) {
    napi_throw_type_error(env, NULL, "useAesGcm: \"best\", \"openssl\" or \"vaes-avx2\"");
    return NULL;
  }
  if (strcmp(which, "vaes-avx2") == 0 && !gcm_runs[GCM_VAES_AVX2]) {
    napi_throw_error(env, NULL, "useAesGcm: this CPU has no VAES or VPCLMULQDQ on AVX2");
    return NULL;
  }
  gcm_in_use = strcmp(which, "openssl") == 0 ? GCM_OPENSSL : strcmp(which, "vaes-avx2") == 0 ? GCM_VAES_AVX2 : gcm_best();
  return aes_gcm_implementation(env, info);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_set_named_property(env, exports, "AESGCMCipher", define(env, "AESGCMCipher", CLASS_ENCRYPT));
  napi_set_named_property(env, exports, "AESGCMDecipher", define(env, "AESGCMDecipher", 0));
  napi_set_named_property(env, exports, "ChaChaPolyCipher", define(env, "ChaChaPolyCipher", CLASS_ENCRYPT | CLASS_CHACHA));
  napi_set_named_property(env, exports, "ChaChaPolyDecipher", define(env, "ChaChaPolyDecipher", CLASS_CHACHA));
  napi_set_named_property(env, exports, "CtrHmacCipher", define(env, "CtrHmacCipher", CLASS_ENCRYPT | CLASS_CTR_HMAC));
  napi_set_named_property(env, exports, "CtrHmacDecipher", define(env, "CtrHmacDecipher", CLASS_CTR_HMAC));
  napi_create_function(env, "relay", NAPI_AUTO_LENGTH, relay, NULL, &fn);
  napi_set_named_property(env, exports, "relay", fn);
  napi_create_function(env, "ctrHmacTakes", NAPI_AUTO_LENGTH, ctr_hmac_takes_js, NULL, &fn);
  napi_set_named_property(env, exports, "ctrHmacTakes", fn);
  napi_create_function(env, "quickAck", NAPI_AUTO_LENGTH, quick_ack, NULL, &fn);
  napi_set_named_property(env, exports, "quickAck", fn);
  napi_create_function(env, "useAesGcm", NAPI_AUTO_LENGTH, use_aes_gcm, NULL, &fn);
  napi_set_named_property(env, exports, "useAesGcm", fn);
  napi_create_function(env, "aesGcmImplementation", NAPI_AUTO_LENGTH, aes_gcm_implementation, NULL, &fn);
  napi_set_named_property(env, exports, "aesGcmImplementation", fn);
  gcm_runs[GCM_OPENSSL] = 1;
  gcm_runs[GCM_VAES_AVX2] = aesgcm_avx2_supported();
#ifdef HAVE_IPSEC_MB
  __builtin_cpu_init();
  /* The library's AVX-512 code needs F, DQ, CD, BW and VL; libgcc also checks that the kernel saves the AVX-512 state. */
  gcm_runs[GCM_IPSEC_MB] = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd")
                           && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vaes")
                           && __builtin_cpu_supports("vpclmulqdq");
#endif
  gcm_in_use = gcm_best();
  socket_relay_init(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
