{
  "targets": [
    {
      "target_name": "processstarter",
      "sources": [
        "native/processstarter.c"
      ],
      "defines": [
        "NAPI_VERSION=8"
      ],
      "cflags": [
        "-Wall",
        "-Wextra"
      ]
    },
    {
      "target_name": "packetrelay",
      "sources": [
        "native/packetrelay.c",
        "native/socketrelay.c"
      ],
      "defines": [
        "NAPI_VERSION=8"
      ],
      "cflags": [
        "-Wall",
        "-Wextra",
        "-O2"
      ]
    }
  ]
}
