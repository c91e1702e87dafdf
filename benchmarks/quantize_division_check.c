// Exhaustive check of the Triton kernels' int8 quantizer (quantize_int8 in
// src/quamba/kernels/triton/_common.py) against IEEE division, the reference's x / scale.
//
// For each scale given (fp32 bit patterns in hex), every positive fp32 x with x / scale <= 256
// (negative x mirror them: both roundings are symmetric) goes through the kernel's steps:
//     r = RN(1/s);  q0 = clamp(RN(x * r), -256, 256);  q = fma(fma(-q0, s, x), r, q0)
// and is compared with RN(x / s): the quotient where no step underflows (x >= 2^-100), and
// the int8 result (clamp to [-127, 127], round half to even) everywhere. Values past 256
// saturate to 127 in both.
//
//     gcc -O2 -mfma -o /tmp/qcheck benchmarks/quantize_division_check.c -lm
//     /tmp/qcheck 3f800000 3f7fffff ...      # about 2.5 s a scale on one core
//
// The scales checked, and the result, are in docs/kernels.md.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float from_bits(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static uint32_t to_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }

static int to_int8(float v) {
    v = fminf(fmaxf(v, -127.0f), 127.0f);
    return (int)nearbyintf(v);   // the default rounding mode: to nearest, ties to even
}

int main(int argc, char **argv) {
    long long total_quotients = 0, total_int8 = 0;
    for (int k = 1; k < argc; k++) {
        float s = from_bits((uint32_t)strtoul(argv[k], 0, 16));
        volatile float one = 1.0f;
        float r = one / s;
        long long n = 0, bad_quotient = 0, bad_int8 = 0;
        for (uint32_t bits = 0; bits < 0x7f800000u; bits++) {
            float x = from_bits(bits);
            float exact = x / s;
            if (exact > 256.0f) break;   // x grows with its bit pattern
            float q0 = fminf(fmaxf(x * r, -256.0f), 256.0f);
            float q = fmaf(fmaf(-q0, s, x), r, q0);
            n++;
            if (to_bits(q) != to_bits(exact) && x >= 0x1p-100f) bad_quotient++;
            if (to_int8(q) != to_int8(exact)) bad_int8++;
        }
        printf("scale %a (0x%08x): %lld values, %lld quotients differ (x >= 2^-100), %lld int8 differ\n",
               s, to_bits(s), n, bad_quotient, bad_int8);
        total_quotients += bad_quotient;
        total_int8 += bad_int8;
    }
    printf("all scales: %lld quotients differ, %lld int8 results differ\n", total_quotients, total_int8);
    return total_int8 != 0;
}
