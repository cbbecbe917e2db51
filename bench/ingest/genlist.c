/* Writes a member list of random MD5-like hashes: 32 lowercase hex digits and
 * '\n' per line, until the file reaches the asked size (the last line may be
 * cut short... no: whole lines only, so size is rounded down to 33 bytes).
 * Usage: genlist <bytes> <seed> > file. About 1 GB/s. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: genlist <bytes> <seed>\n"); return 2; }
    unsigned long long bytes = strtoull(argv[1], 0, 10);
    uint64_t s = strtoull(argv[2], 0, 10) * 0x9E3779B97F4A7C15ull + 1;
    static const char hex[] = "0123456789abcdef";
    static char buf[33 * 4096];
    unsigned long long lines = bytes / 33, done = 0;
    while (done < lines) {
        size_t n = 0;
        for (int i = 0; i < 4096 && done < lines; i++, done++) {
            for (int half = 0; half < 2; half++) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                uint64_t v = s;
                for (int k = 0; k < 16; k++) { buf[n++] = hex[v >> 60]; v <<= 4; }
            }
            buf[n++] = '\n';
        }
        fwrite(buf, 1, n, stdout);
    }
    return 0;
}
