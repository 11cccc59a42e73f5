{
  "variables": {
    "ipsec_mb": "<!(test -f /usr/include/intel-ipsec-mb.h && echo 1 || echo 0)"
  },
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
      "target_name": "userfiles",
      "sources": [
        "native/userfiles.c"
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
        "native/socketrelay.c",
        "native/aesgcm_avx2.c"
      ],
      "defines": [
        "NAPI_VERSION=8"
      ],
      "cflags": [
        "-Wall",
        "-Wextra",
        "-O2"
      ],
      "conditions": [
        [
          "ipsec_mb==1",
          {
            "defines": [
              "HAVE_IPSEC_MB"
            ],
            "libraries": [
              "-lIPSec_MB"
            ]
          }
        ]
      ]
    }
  ]
}
