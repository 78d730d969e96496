/* CRC-32 (IEEE 802.3, reflected 0xEDB88320), identical to zlib.crc32 / binascii.crc32. */
#include "cs_core.h"

static uint32_t table[256];
static int table_ready;

static void build_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[n] = c;
    }
    table_ready = 1;
}

uint32_t cs_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    /* Built on first use rather than stored as a 1 KiB constant: costs 1 KiB of RAM instead. */
    if (!table_ready) build_table();
    uint32_t c = crc ^ 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) c = table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}
