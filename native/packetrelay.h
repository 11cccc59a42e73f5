/*
 * What native/packetrelay.c (the ciphers and the relay loop) shares with
 * native/socketrelay.c (the loop run on the sockets themselves).
 */
#ifndef PACKETRELAY_H
#define PACKETRELAY_H

#include <stddef.h>
#include <stdint.h>

#include <node_api.h>

/* ssh2's limit for inbound packets (crypto.js MAX_PACKET_SIZE). */
#define MAX_PACKET_SIZE 35000
/* The tag of the AEAD ciphers. */
#define TAG_LEN 16
/* The longest MAC after a packet: HMAC-SHA-512's. */
#define MAX_MAC_LEN 64
/* The largest packet on the wire: length, body, tag or MAC. */
#define MAX_WIRE_PACKET (4 + MAX_PACKET_SIZE + MAX_MAC_LEN)

/* A cipher or decipher of one leg: AES-GCM, ChaCha20-Poly1305, or AES-CTR with HMAC (opaque outside packetrelay.c). */
typedef struct cipher cipher_t;

/* Why relay_packets() stopped. */
enum { STOP_END = 0, STOP_OTHER_TYPE = 1, STOP_OUTPUT_FULL = 2 };

/* What relay_packets() did: where it stopped and why. */
typedef struct {
  size_t next;       /* where the chunk's next packet starts */
  size_t out_end;    /* the end of the output written */
  uint32_t relayed;  /* packets relayed */
  int stop;          /* STOP_* */
  /* STOP_OTHER_TYPE: where the packet after that one starts. That packet is
     decrypted in place, its length field the body length in the clear. */
  size_t after;
} relay_result_t;

const char *relay_packets(unsigned char *chunk, size_t start, size_t end, cipher_t *dec, uint32_t in_seqno, cipher_t *enc, uint32_t out_seqno,
                          const unsigned char *forwarded, unsigned char *out, size_t out_start, size_t out_len, relay_result_t *result);

/* The cipher (encrypt) or decipher of `object`, if it is one of ours and not freed; else throws and returns NULL. */
cipher_t *unwrap(napi_env env, napi_value object, int encrypt);
napi_value throw_error(napi_env env, const char *message);
int get_buffer(napi_env env, napi_value value, unsigned char **data, size_t *len);
int get_u32(napi_env env, napi_value value, uint32_t *out);

/* Adds SocketRelay and socketRelayTotals to the module's exports. */
void socket_relay_init(napi_env env, napi_value exports);

#endif
