/* Test harness: drives the firmware kernels directly from the Python tests.
 *   harness requant        stdin: int32 triples (acc, mult, shift) -> stdout: int32 results
 *   harness model BLOB     stdin: int8 rows of in_dim            -> stdout: int8 rows of out_dim
 *   harness requant_fast   like requant, through the DSP kernels' cs_requantize_fast
 *   harness bag DIM        stdin: u32 rows, u32 n, int8 table[rows*dim], u16 ids[n]
 *                          -> stdout: int32 sums[dim] (cs_embed_bag_s8)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cs_core.h"
#include "kernels_internal.h"

/* The core's printing needs a port; the harness never prints through it. */
void port_putc(char c) { (void)c; }
void port_flush(void) {}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "requant") == 0) {
        int32_t t[3];
        while (fread(t, sizeof t, 1, stdin) == 1) {
            int32_t r = cs_requantize(t[0], t[1], t[2]);
            fwrite(&r, sizeof r, 1, stdout);
        }
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "requant_fast") == 0) {
        int32_t t[3];
        while (fread(t, sizeof t, 1, stdin) == 1) {
            int32_t r = cs_requantize_fast(t[0], t[1], t[2]);
            fwrite(&r, sizeof r, 1, stdout);
        }
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "bag") == 0) {
        uint32_t dim = (uint32_t)atoi(argv[2]), hdr[2];
        if (fread(hdr, sizeof hdr, 1, stdin) != 1) return 2;
        int8_t *table = malloc((size_t)hdr[0] * dim + 1);
        uint16_t *ids = malloc((size_t)hdr[1] * 2 + 2);
        int32_t *acc = calloc(dim + 1, 4);
        if (!table || !ids || !acc) return 4;
        if (fread(table, 1, (size_t)hdr[0] * dim, stdin) != (size_t)hdr[0] * dim) return 2;
        if (fread(ids, 2, hdr[1], stdin) != hdr[1]) return 2;
        cs_embed_bag_s8(table, dim, ids, hdr[1], acc);
        fwrite(acc, 4, dim, stdout);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "model") == 0) {
        static uint8_t blob[8u << 20] __attribute__((aligned(4)));
        FILE *f = fopen(argv[2], "rb");
        if (!f) return 2;
        size_t n = fread(blob, 1, sizeof blob, f);
        fclose(f);
        cs_model_t m;
        const char *why = cs_model_parse(blob, (uint32_t)n, &m);
        if (why) {
            fprintf(stderr, "parse: %s\n", why);
            return 3;
        }
        static int8_t x[CS_MAX_DIM], y[CS_MAX_DIM];
        while (fread(x, 1, m.in_dim, stdin) == m.in_dim) {
            cs_model_run(&m, x, y);
            fwrite(y, 1, m.out_dim, stdout);
        }
        return 0;
    }
    fprintf(stderr, "usage: harness requant | harness model BLOB\n");
    return 1;
}
