{
  "targets": [
    {
      "target_name": "processstarter",
      "sources": ["native/processstarter.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra"]
    }
  ]
}
