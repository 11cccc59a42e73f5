/*
 * A security key in software, for the tests: an OpenSSH security key
 * provider (ssh-keygen -w FILE, ssh -o SecurityKeyProvider=FILE) that
 * needs no FIDO device. The real ssh-keygen makes ed25519-sk and ecdsa-sk
 * keys with it, and the real ssh signs logins with it, as they would with
 * a device: the signature covers SHA-256(application) || flags || counter
 * || SHA-256(data), as a FIDO authenticator's does.
 *
 * Not a security key at all: the "key handle" that OpenSSH keeps in the
 * private key file is the private key itself (DER). Test use only.
 *
 * The flags of every signature come from SOFTKEY_FLAGS (a number; default
 * 1, "the user touched the key"; 5 adds "and verified the user"), which
 * ssh passes on to the ssh-sk-helper that loads this library.
 *
 * Build: cc -shared -fPIC -o softkey.so softkey.c -lcrypto
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* The provider interface of OpenSSH 9 (its sk-api.h, API version 10). */
#define PROVIDER_API_VERSION 0x000a0000
#define ALG_ECDSA_P256 0x00
#define ALG_ED25519 0x01
#define ERR_GENERAL -1
#define ERR_UNSUPPORTED -2

struct sk_enroll_response {
  uint8_t flags; /* new in API version 10 */
  uint8_t *public_key;
  size_t public_key_len;
  uint8_t *key_handle;
  size_t key_handle_len;
  uint8_t *signature;
  size_t signature_len;
  uint8_t *attestation_cert;
  size_t attestation_cert_len;
  uint8_t *authdata;
  size_t authdata_len;
};

struct sk_sign_response {
  uint8_t flags;
  uint32_t counter;
  uint8_t *sig_r;
  size_t sig_r_len;
  uint8_t *sig_s;
  size_t sig_s_len;
};

struct sk_option;
struct sk_resident_key;

uint32_t sk_api_version(void) { return PROVIDER_API_VERSION; }

static uint8_t *copy(const uint8_t *bytes, size_t length) {
  uint8_t *c = malloc(length ? length : 1);
  if (c) memcpy(c, bytes, length);
  return c;
}

int sk_enroll(uint32_t alg, const uint8_t *challenge, size_t challenge_len, const char *application, uint8_t flags, const char *pin,
              struct sk_option **options, struct sk_enroll_response **enroll_response) {
  (void)challenge, (void)challenge_len, (void)application, (void)pin, (void)options;
  EVP_PKEY *key = alg == ALG_ED25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") : alg == ALG_ECDSA_P256 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256") : NULL;
  if (!key) return alg == ALG_ED25519 || alg == ALG_ECDSA_P256 ? ERR_GENERAL : ERR_UNSUPPORTED;
  int status = ERR_GENERAL;
  struct sk_enroll_response *r = calloc(1, sizeof *r);
  uint8_t point[65];
  size_t point_length = sizeof point;
  /* Ed25519: the 32-byte key; ECDSA: the uncompressed point. */
  int ok = alg == ALG_ED25519 ? EVP_PKEY_get_raw_public_key(key, point, &point_length)
                              : EVP_PKEY_get_octet_string_param(key, "encoded-pub-key", point, sizeof point, &point_length);
  unsigned char *der = NULL;
  int der_length = i2d_PrivateKey(key, &der);
  if (r && ok && der_length > 0) {
    r->flags = flags;
    r->public_key = copy(point, point_length);
    r->public_key_len = point_length;
    r->key_handle = copy(der, (size_t)der_length);
    r->key_handle_len = (size_t)der_length;
    if (r->public_key && r->key_handle) {
      *enroll_response = r;
      r = NULL;
      status = 0;
    }
  }
  if (r) {
    free(r->public_key);
    free(r->key_handle);
    free(r);
  }
  OPENSSL_free(der);
  EVP_PKEY_free(key);
  return status;
}

int sk_sign(uint32_t alg, const uint8_t *data, size_t data_len, const char *application, const uint8_t *key_handle, size_t key_handle_len,
            uint8_t flags, const char *pin, struct sk_option **options, struct sk_sign_response **sign_response) {
  (void)flags, (void)pin, (void)options;
  const char *wanted = getenv("SOFTKEY_FLAGS");
  uint8_t signed_flags = wanted ? (uint8_t)atoi(wanted) : 0x01;
  const uint32_t counter = 1;

  /* What an authenticator signs: application hash, flags, counter, client data hash. */
  uint8_t tbs[32 + 1 + 4 + 32];
  unsigned int hash_length;
  EVP_Digest(application, strlen(application), tbs, &hash_length, EVP_sha256(), NULL);
  tbs[32] = signed_flags;
  tbs[33] = counter >> 24, tbs[34] = counter >> 16, tbs[35] = counter >> 8, tbs[36] = counter;
  EVP_Digest(data, data_len, tbs + 37, &hash_length, EVP_sha256(), NULL);

  const unsigned char *p = key_handle;
  EVP_PKEY *key = d2i_AutoPrivateKey(NULL, &p, (long)key_handle_len);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  uint8_t signature[128];
  size_t signature_length = sizeof signature;
  int status = ERR_GENERAL;
  struct sk_sign_response *r = calloc(1, sizeof *r);
  if (key && ctx && r && EVP_DigestSignInit(ctx, NULL, alg == ALG_ED25519 ? NULL : EVP_sha256(), NULL, key) == 1 &&
      EVP_DigestSign(ctx, signature, &signature_length, tbs, sizeof tbs) == 1) {
    r->flags = signed_flags;
    r->counter = counter;
    if (alg == ALG_ED25519) {
      r->sig_r = copy(signature, signature_length);
      r->sig_r_len = signature_length;
      if (r->sig_r) status = 0;
    } else {
      /* ECDSA: r and s apart, as unsigned big-endian numbers. */
      const unsigned char *q = signature;
      ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &q, (long)signature_length);
      if (sig) {
        r->sig_r_len = (size_t)BN_num_bytes(ECDSA_SIG_get0_r(sig));
        r->sig_s_len = (size_t)BN_num_bytes(ECDSA_SIG_get0_s(sig));
        r->sig_r = malloc(r->sig_r_len ? r->sig_r_len : 1);
        r->sig_s = malloc(r->sig_s_len ? r->sig_s_len : 1);
        if (r->sig_r && r->sig_s) {
          BN_bn2bin(ECDSA_SIG_get0_r(sig), r->sig_r);
          BN_bn2bin(ECDSA_SIG_get0_s(sig), r->sig_s);
          status = 0;
        }
        ECDSA_SIG_free(sig);
      }
    }
  }
  if (status == 0) {
    *sign_response = r;
  } else if (r) {
    free(r->sig_r);
    free(r->sig_s);
    free(r);
  }
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  return status;
}

int sk_load_resident_keys(const char *pin, struct sk_option **options, struct sk_resident_key ***rks, size_t *nrks) {
  (void)pin, (void)options, (void)rks, (void)nrks;
  return ERR_UNSUPPORTED;
}
