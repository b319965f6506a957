// wasm-score: a fixed CPU workload (integer hashing, sorting, a small matrix product) timed by
// the coarse monotonic clock. Prints "wasm-score <n>" where n is work rounds per second x 1000,
// and a checksum so that a broken build cannot post a fast score.
// Usage: wasm-score [rounds] (default 40)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 4096
#define M 48

static uint32_t xs(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint64_t round_once(uint32_t seed) {
    static uint32_t v[N];
    static double a[M][M], b[M][M], c[M][M];
    uint32_t s = seed | 1;
    for (int i = 0; i < N; i++) v[i] = xs(&s);
    qsort(v, N, sizeof v[0], cmp);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < N; i++) h = (h ^ v[i]) * 1099511628211ull;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) {
            a[i][j] = (double)(xs(&s) & 0xffff) / 65536.0;
            b[i][j] = (double)(xs(&s) & 0xffff) / 65536.0;
        }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) {
            double acc = 0;
            for (int k = 0; k < M; k++) acc += a[i][k] * b[k][j];
            c[i][j] = acc;
        }
    return h ^ (uint64_t)(c[M / 2][M / 3] * 1e9);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    if (rounds <= 0) rounds = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t sum = 0;
    for (int r = 0; r < rounds; r++) sum ^= round_once((uint32_t)r * 2654435761u);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (secs < 1e-3) secs = 1e-3;
    printf("rounds %d\nchecksum %016llx\nwasm-score %.0f\n", rounds, (unsigned long long)sum,
           rounds * 1000.0 / secs);
    return 0;
}
