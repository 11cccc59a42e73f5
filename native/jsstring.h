/* A JS string copied into C memory, for the addons' requests to their pool threads. */
#ifndef JSP_JSSTRING_H
#define JSP_JSSTRING_H

#include <stdlib.h>

#include <node_api.h>

/* Copies a JS string into malloc'd memory; NULL on failure. */
static inline char *copy_string(napi_env env, napi_value value) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return NULL;
  char *s = malloc(length + 1);
  if (s && napi_get_value_string_utf8(env, value, s, length + 1, &length) != napi_ok) {
    free(s);
    return NULL;
  }
  return s;
}

#endif
