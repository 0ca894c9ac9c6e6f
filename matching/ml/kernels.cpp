/* Kernels of the towers: a field-attention layer in one pass per person (inference) and with a
 * backward (training), a DNN layer's activation in training, dropout multipliers, a batch's id bags
 * and their gradient.
 *
 * The attention layer: one pass per person over their F tokens.
 *
 * Computes, for each person b (tokens x: F x D, heads H of width d = D / H):
 *
 *   [Q K V] = x Wqkv^T + bqkv                                  (F x 3D)
 *   a_h     = softmax_j( scale * (Q_h . w_h) K_h^T )           (F x F per head; w_h = 1 for
 *                                                               plain self-attention)
 *   m_h     = a_h V_h            (self-attention)
 *   m_h     = Q_h . (a_h V_h)    (productive attention; "." is the element-wise product)
 *   y       = LayerNorm([m_1 .. m_H] Wout^T + bout + x)        (F x D)
 *
 * which is what ``FieldSelfAttention`` / ``ProductiveAttention`` followed by the residual and
 * ``LayerNorm`` compute in ``matching/ml/model.py`` in eval mode. PyTorch runs it as a dozen
 * operators over (B, F, F) and (B, F, d) tensors, each a pass over memory and the attention
 * products as B tiny batched matrix products; here one person's tokens, projections and scores
 * stay in registers and L1 and every weight matrix (at most a few KB) stays in cache.
 *
 * Written with GCC/Clang vector types of eight floats (one AVX register; two SSE or NEON ones
 * elsewhere) rather than left to the auto-vectoriser, which vectorised only some of these short
 * loops. The shape is fixed when compiling (-DFIELDS=8 -DWIDTH=16 -DHEADS=2 for the default
 * model), so every loop here has constant bounds and unrolls: ``matching/ml/kernels.py`` builds
 * one library per shape a model needs, with the flags of the machine it runs on, and sends shapes
 * this file does not take (widths not multiples of 8) to PyTorch.
 */
#include <cstdint>

#include <omp.h>

#define INLINE static inline __attribute__((always_inline))

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));  // unaligned access
typedef int32_t v8i __attribute__((vector_size(32)));

INLINE v8 load(const float *p) { return *reinterpret_cast<const v8u *>(p); }
INLINE void store(float *p, v8 v) { *reinterpret_cast<v8u *>(p) = v; }
INLINE v8 splat(float a) { return v8{a, a, a, a, a, a, a, a}; }
INLINE v8 vmax(v8 a, v8 b) { return a > b ? a : b; }

/* exp(x) for x <= 0 (softmax inputs after subtracting the row maximum): the Cephes single
 * precision polynomial (relative error below 2e-7). Inputs under -87 give about 1e-38, as good
 * as 0 after normalisation. */
INLINE v8 exp_nonpositive(v8 x) {
    x = x < -87.0f ? splat(-87.0f) : x;
    const v8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
    v8 r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    v8 p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const v8 e = p * r * r + r + 1.0f;
    const v8i two_n = (__builtin_convertvector(n, v8i) + 127) << 23;
    return e * reinterpret_cast<v8>(two_n);
}

/* ---------------------------------------------------------------------------------------------
 * Dropout multipliers (every build; kernels.py also builds this part alone, without a shape).
 * Element i keeps with probability 1 - t / 65536 on 16 bits of a counter-based hash of (seed, i):
 * the same multipliers whatever the number of threads, and a few instructions an element against
 * PyTorch's two Mersenne-twister draws per 64 random bits (3.6 ms of a 91 ms training step here).
 * The hash is MurmurHash3's 32-bit finaliser of the pair index under two seed words.
 * ------------------------------------------------------------------------------------------- */
INLINE uint32_t mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* 32 random bits for each pair index j (two elements' 16 bits) of a stream fixed by a 64-bit seed. */
struct HashStream {
    uint32_t k1, k2;
    explicit HashStream(uint64_t seed)
        : k1(mix32((uint32_t)seed ^ 0x9e3779b9u)), k2(mix32((uint32_t)(seed >> 32) + k1)) {}
    uint32_t pair(uint64_t j) const { return mix32(((uint32_t)j * 0x9e3779b1u) ^ k1) ^ k2; }
    uint32_t bits16(uint64_t i) const { return (i & 1) ? pair(i >> 1) >> 16 : pair(i >> 1) & 0xffffu; }
};

/* out[i] = 0 or scale for i < n (n < 2^33), keeping an element when its 16 bits are >= threshold. */
extern "C" void dropout_multipliers(int64_t n, int threads, uint64_t seed, uint32_t threshold, float scale, float *out)
{
    const HashStream stream(seed);
    const int64_t pairs = n / 2;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t j = 0; j < pairs; j++) {  // no branch in the loop: it vectorises
        const uint32_t h = stream.pair(j);
        out[2 * j] = (h & 0xffffu) >= threshold ? scale : 0.0f;
        out[2 * j + 1] = (h >> 16) >= threshold ? scale : 0.0f;
    }
    if (n % 2) out[n - 1] = stream.bits16(n - 1) >= threshold ? scale : 0.0f;
}

/* ---------------------------------------------------------------------------------------------
 * The in-batch loss's softmax (``train._InBatchSoftmaxLoss``), row by row in place: x (rows x cols,
 * row-major) becomes exp(x - max) / sum, and lse[r] = log(sum) + max, the row's log-sum-exp. Each
 * row (4 KB at a batch of 1,024) is read for its maximum, then exponentiated and summed, then
 * scaled while it is in L1: PyTorch took five passes over the whole matrix (maximum, subtract,
 * exp, sum, divide), each out of L2 or memory.
 * ------------------------------------------------------------------------------------------- */
extern "C" void softmax_rows(int64_t rows, int64_t cols, int threads, float *x, float *lse)
{
    const int64_t vec = cols / 8 * 8;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *row = x + r * cols;
        v8 top8 = splat(-__builtin_inff());
        for (int64_t c = 0; c < vec; c += 8) top8 = vmax(top8, load(row + c));
        float top = -__builtin_inff();
        for (int k = 0; k < 8; k++) top = top8[k] > top ? top8[k] : top;
        for (int64_t c = vec; c < cols; c++) top = row[c] > top ? row[c] : top;
        v8 sum8 = {};
        for (int64_t c = 0; c < vec; c += 8) {
            const v8 e = exp_nonpositive(load(row + c) - top);
            store(row + c, e);
            sum8 += e;
        }
        float sum = 0.0f;
        for (int k = 0; k < 8; k++) sum += sum8[k];
        for (int64_t c = vec; c < cols; c++) {
            v8 tail = splat(row[c] - top);
            row[c] = exp_nonpositive(tail)[0];
            sum += row[c];
        }
        const float inv = 1.0f / sum;
        for (int64_t c = 0; c < vec; c += 8) store(row + c, load(row + c) * inv);
        for (int64_t c = vec; c < cols; c++) row[c] *= inv;
        lse[r] = __builtin_logf(sum) + top;
    }
}

/* out (cols x rows) = in (rows x cols) transposed, both row-major, in 32 x 32 tiles that stay in
 * L1. For gemm.mm_tn, whose left operand oneDNN wants row-major: PyTorch's transposing copy ran at
 * a third to a half of this rate on the towers' shapes. */
extern "C" void transpose(int64_t rows, int64_t cols, int threads, const float *in, float *out)
{
    constexpr int64_t T = 32;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t r0 = 0; r0 < rows; r0 += T)
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            const int64_t r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++) out[c * rows + r] = in[r * cols + c];
        }
}

/* The id bags of a batch (``inputs.UserInputs.batch``): for each of n rows, the stored members of
 * its CSR row (indptr, indices, data; members: each stored member's embedding row) without the
 * member hide[i] (hide may be null; -1 hides nobody) and, when threshold > 0, without those whose
 * 16 hash bits of (seed, position in the batch's flat member order) fall under threshold. Writes
 * the kept members' embedding rows, their weights (when out_weight is not null; renormalised to
 * sum to 1 per row when asked) and each row's offset; returns how many were kept. One pass, no
 * temporary arrays: NumPy took about ten passes over the members (9 ms of a training step). */
extern "C" int64_t bag_gather(
    int64_t n, const int64_t *rows, const int32_t *indptr, const int32_t *indices, const float *data,
    const int32_t *members, const int64_t *hide, uint64_t seed, uint32_t threshold, int renormalise,
    int64_t *out_index, float *out_weight, int64_t *out_offsets)
{
    const HashStream stream(seed);
    int64_t kept = 0, position = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t row = rows[i], first = kept;
        const int64_t hidden = hide ? hide[i] : -1;
        out_offsets[i] = kept;
        float total = 0.0f;
        for (int64_t k = indptr[row]; k < indptr[row + 1]; k++, position++) {
            if (indices[k] == hidden) continue;
            if (threshold && stream.bits16(position) < threshold) continue;
            out_index[kept] = members[k];
            if (out_weight) {
                out_weight[kept] = data[k];
                total += data[k];
            }
            kept++;
        }
        if (renormalise && out_weight && kept > first) {
            const float inv = 1.0f / (total > 1e-12f ? total : 1e-12f);
            for (int64_t j = first; j < kept; j++) out_weight[j] *= inv;
        }
    }
    return kept;
}

/* The embedding table's gradient of a batch of bags (``model._BagFunction``): out (rows x width,
 * zeroed by the caller) += each member's weight times its bag's gradient row, the weight being
 * per_sample[m] (sums; 1 when null) or 1 / bag size (means). One pass over the members, against
 * building a scipy CSR matrix and its transposed product (about 1 ms a bag field a step here). */
extern "C" void bag_backward(
    int64_t bags, const int64_t *offsets, int64_t members, const int64_t *index, const float *per_sample,
    int mean, const float *grad, int width, float *__restrict out)
{
    const int vectors = width % 8 == 0 ? width / 8 : 0;  // whole rows as vectors (the usual widths)
    for (int64_t b = 0; b < bags; b++) {
        const int64_t start = offsets[b], stop = b + 1 < bags ? offsets[b + 1] : members;
        if (stop <= start) continue;
        const float *__restrict g = grad + b * width;
        const float share = mean ? 1.0f / (float)(stop - start) : 1.0f;
        for (int64_t m = start; m < stop; m++) {
            const float w = per_sample ? per_sample[m] * share : share;
            float *row = out + index[m] * width;
            if (vectors)
                for (int v = 0; v < vectors; v++) store(row + 8 * v, load(row + 8 * v) + w * load(g + 8 * v));
            else
                for (int c = 0; c < width; c++) row[c] += w * g[c];
        }
    }
}

/* Lazy Adam over the rows a batch touched (every build; train.LazyAdam's formula, row by row):
 * for each of the n distinct rows r, with g its gradient row (n x width, in the order of rows),
 *
 *   g  += weight_decay * p[r]
 *   m[r] = beta1 m[r] + (1 - beta1) g,    v[r] = beta2 v[r] + (1 - beta2) g^2
 *   p[r] -= lr (m[r] / correction1) / (sqrt(v[r] / correction2) + eps)
 *
 * One pass with the parameter, both moments and the gradient of a row in hand, against PyTorch's
 * three gathers, three scatters and the element-wise passes between them over a table of a
 * million rows, where every row is a cache miss. The rows must be distinct (a coalesced gradient). */
extern "C" void lazy_adam_rows(
    int64_t n, int width, int threads, const int64_t *rows, const float *grad, float *param, float *exp_avg,
    float *exp_avg_sq, float lr, float beta1, float beta2, float eps, float weight_decay, float correction1,
    float correction2)
{
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *__restrict p = param + rows[i] * width, *__restrict m = exp_avg + rows[i] * width;
        float *__restrict v = exp_avg_sq + rows[i] * width;
        const float *__restrict g = grad + i * width;
        for (int c = 0; c < width; c++) {
            const float gc = g[c] + weight_decay * p[c];
            m[c] = beta1 * m[c] + (1.0f - beta1) * gc;
            v[c] = beta2 * v[c] + (1.0f - beta2) * gc * gc;
            p[c] -= lr * ((m[c] / correction1) / (__builtin_sqrtf(v[c] / correction2) + eps));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * A DNN layer's activation in training (every build): BatchNorm over the batch, ReLU, dropout.
 *
 * For z (n x w, the Linear's output), per column c, with the batch's mean and biased variance:
 *
 *   xhat = (z - mean_c) * istd_c,   istd_c = 1 / sqrt(var_c + eps)
 *   y    = max(0, gamma_c xhat + beta_c) * m
 *
 * m being the dropout multiplier of element i = r w + c (the HashStream of dropout_multipliers
 * with the same seed: the same mask). Backward, from dy, with g = dy * m where the ReLU passed
 * (gamma_c xhat + beta_c > 0) and 0 elsewhere:
 *
 *   dbeta_c  = sum_r g,    dgamma_c = sum_r g xhat
 *   dz       = gamma_c istd_c (g - dbeta_c / n - xhat dgamma_c / n)
 *
 * PyTorch runs this as seven operators (batch_norm, relu, the multipliers and their product
 * forward; their backwards), each a pass over the (n x w) activations; here the forward is three
 * passes (sums, squared deviations, output) and the backward two (sums, gradient), xhat, the
 * ReLU's mask and the dropout multipliers recomputed rather than stored. Rows are split over the
 * threads; each thread's column sums go to scratch (threads x 3w, with a row of multipliers) and are added in a fixed order,
 * so results do not depend on timing. w is a multiple of 8 (the vectors).
 * ------------------------------------------------------------------------------------------- */
/* Adds scratch's per-thread rows (threads x w each, at stride) into out (w), in thread order. */
static void add_partials(const float *scratch, int threads, int64_t stride, int w, float *out)
{
    for (int c = 0; c < w; c++) out[c] = 0.0f;
    for (int t = 0; t < threads; t++)
        for (int c = 0; c < w; c++) out[c] += scratch[t * stride + c];
}

/* Row r's dropout multipliers, as dropout_multipliers writes elements r w .. r w + w - 1. */
INLINE void row_multipliers(const HashStream &stream, int64_t r, int w, uint32_t threshold, float scale, float *m)
{
    const uint64_t first = (uint64_t)(r * w) >> 1;
    for (int j = 0; j < w / 2; j++) {
        const uint32_t h = stream.pair(first + j);
        m[2 * j] = (h & 0xffffu) >= threshold ? scale : 0.0f;
        m[2 * j + 1] = (h >> 16) >= threshold ? scale : 0.0f;
    }
}

extern "C" void bn_relu_dropout_forward(
    int64_t n, int w, int threads, const float *z, const float *gamma, const float *beta, float eps,
    uint64_t seed, uint32_t threshold, float scale, float *y, float *stats /* 3 x w: mean, var, istd */,
    float *scratch /* threads x 3w */)
{
    float *mean = stats, *var = stats + w, *istd = stats + 2 * w;
    const HashStream stream(seed);
    const v8 zero = splat(0.0f);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        float *acc = scratch + (int64_t)t * 3 * w, *m = acc + 2 * w;
        for (int c = 0; c < w; c += 8) store(acc + c, zero);
        for (int64_t r = lo; r < hi; r++)
            for (int c = 0; c < w; c += 8) store(acc + c, load(acc + c) + load(z + r * w + c));
#pragma omp barrier
#pragma omp single
        {
            add_partials(scratch, nt, 3 * w, w, mean);
            for (int c = 0; c < w; c++) mean[c] /= (float)n;
        }
        for (int c = 0; c < w; c += 8) store(acc + c, zero);
        for (int64_t r = lo; r < hi; r++)
            for (int c = 0; c < w; c += 8) {
                const v8 d = load(z + r * w + c) - load(mean + c);
                store(acc + c, load(acc + c) + d * d);
            }
#pragma omp barrier
#pragma omp single
        {
            add_partials(scratch, nt, 3 * w, w, var);
            for (int c = 0; c < w; c++) {
                var[c] /= (float)n;
                istd[c] = 1.0f / __builtin_sqrtf(var[c] + eps);
            }
        }
        for (int64_t r = lo; r < hi; r++) {
            row_multipliers(stream, r, w, threshold, scale, m);
            for (int c = 0; c < w; c += 8) {
                const v8 a = (load(z + r * w + c) - load(mean + c)) * load(istd + c) * load(gamma + c) + load(beta + c);
                store(y + r * w + c, a > 0.0f ? a * load(m + c) : zero);
            }
        }
    }
}

extern "C" void bn_relu_dropout_backward(
    int64_t n, int w, int threads, const float *z, const float *stats /* 3 x w */, const float *gamma,
    const float *beta, uint64_t seed, uint32_t threshold, float scale, const float *dy, float *dz,
    float *dgamma, float *dbeta, float *scratch /* threads x 3w */)
{
    const float *mean = stats, *istd = stats + 2 * w;
    const HashStream stream(seed);
    const v8 zero = splat(0.0f);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        float *sum_g = scratch + (int64_t)t * 3 * w, *sum_gx = sum_g + w, *m = sum_g + 2 * w;
        for (int c = 0; c < 2 * w; c += 8) store(sum_g + c, zero);
        for (int64_t r = lo; r < hi; r++) {  // g and xhat recomputed here and in the second pass
            row_multipliers(stream, r, w, threshold, scale, m);
            for (int c = 0; c < w; c += 8) {
                const v8 xh = (load(z + r * w + c) - load(mean + c)) * load(istd + c);
                const v8 g = xh * load(gamma + c) + load(beta + c) > 0.0f ? load(dy + r * w + c) * load(m + c) : zero;
                store(sum_g + c, load(sum_g + c) + g);
                store(sum_gx + c, load(sum_gx + c) + g * xh);
            }
        }
#pragma omp barrier
#pragma omp single
        {
            add_partials(scratch, nt, 3 * w, w, dbeta);
            add_partials(scratch + w, nt, 3 * w, w, dgamma);
        }
        const float inv_n = 1.0f / (float)n;
        for (int64_t r = lo; r < hi; r++) {
            row_multipliers(stream, r, w, threshold, scale, m);
            for (int c = 0; c < w; c += 8) {
                const v8 xh = (load(z + r * w + c) - load(mean + c)) * load(istd + c);
                const v8 g = xh * load(gamma + c) + load(beta + c) > 0.0f ? load(dy + r * w + c) * load(m + c) : zero;
                const v8 centred = g - load(dbeta + c) * inv_n - xh * load(dgamma + c) * inv_n;
                store(dz + r * w + c, load(gamma + c) * load(istd + c) * centred);
            }
        }
    }
}

#ifdef FIELDS
constexpr int F = FIELDS, D = WIDTH, H = HEADS;
constexpr int FV = (F + 7) / 8, P = 8 * FV;  // vectors over the fields, fields padded to them
static_assert(F >= 1 && F <= 64 && D % 8 == 0 && H >= 1 && D % H == 0 && (D / H) % 8 == 0,
              "a shape kernels.py should have sent to PyTorch");

/* Scores, softmax and mixing of one head for one person, as vectors over the queries.
 * q_t: the head's queries transposed (d x P, lanes past F zero); rows: the person's projection rows
 * (F x 3D), the head's keys from column k0, values from v0; pws: the head's product weights times
 * the softmax scale; mask: dropout multipliers by key (F x P) or nullptr. Writes the weights by key
 * (F x P) to attention and the mixed values transposed (d x P) to mixed_t; the productive layer's
 * values are multiplied by the queries. */
template <bool PRODUCTIVE>
INLINE void head_forward(
    const float (*__restrict q_t)[P], const float (*__restrict rows)[3 * D], int k0, int v0,
    const float *__restrict pws, const float *__restrict mask, float *__restrict attention,
    float (*__restrict mixed_t)[P])
{
    constexpr int d = D / H;
    v8 scores[F][FV];
    for (int j = 0; j < F; j++)
        for (int f = 0; f < FV; f++) scores[j][f] = v8{};
    for (int c = 0; c < d; c++) {
        for (int f = 0; f < FV; f++) {
            const v8 qw = load(q_t[c] + 8 * f) * pws[c];
            for (int j = 0; j < F; j++) scores[j][f] += qw * rows[j][k0 + c];
        }
    }
    for (int f = 0; f < FV; f++) {
        v8 top = scores[0][f], total = {};
        for (int j = 1; j < F; j++) top = vmax(top, scores[j][f]);
        for (int j = 0; j < F; j++) {
            scores[j][f] = exp_nonpositive(scores[j][f] - top);
            total += scores[j][f];
        }
        const v8 inv = 1.0f / total;
        for (int j = 0; j < F; j++) {
            scores[j][f] *= inv;
            store(attention + j * P + 8 * f, scores[j][f]);
            if (mask) scores[j][f] *= load(mask + j * P + 8 * f);
        }
    }
    for (int c = 0; c < d; c++) {
        for (int f = 0; f < FV; f++) {
            v8 m = {};
            for (int j = 0; j < F; j++) m += scores[j][f] * rows[j][v0 + c];
            if (PRODUCTIVE) m *= load(q_t[c] + 8 * f);
            store(mixed_t[c] + 8 * f, m);
        }
    }
}

/* One person: F tokens of width D in H heads.
 *
 * The projections are computed a token at a time (a vector over output widths); everything after
 * them a column at a time, as vectors over the F tokens ("transposed"): the scores of key j for all
 * queries, their softmax and the mixing are then lane-wise operations on independent vectors, with
 * no reduction across lanes and no chain of dependent operations longer than the head width. (A
 * token-at-a-time version ran a third as fast on a Zen 1 core: its softmax reductions across lanes
 * and per-row dependency chains left the core waiting.)
 *
 * product_weights: (H, d), already multiplied by the softmax scale. attention: (H, F keys, P) with
 * each key's weights for all queries in a row, read back as a transposed view. */
/* What the training forward keeps of one person for the backward (kernels.py holds each as a
 * batch tensor): the projections (F x 3D), the mixed values transposed (D x P), the LayerNorm's
 * normalised input transposed (D x P) and its inverse standard deviations (P). */
struct Saved {
    float *qkv, *mixed_t, *xhat_t, *istd;
};

template <bool PRODUCTIVE>
INLINE void layer_one(
    const float *__restrict x, const float *__restrict wqkv_t, const float *__restrict bqkv,
    const float *__restrict product_weights, const float *__restrict wout, const float *__restrict bout,
    const float *__restrict ln_weight, const float *__restrict ln_bias, float eps, float *__restrict y,
    float *__restrict attention, const float *__restrict mask, const Saved *saved)
{
    constexpr int d = D / H, QV = 3 * D / 8;
    alignas(32) float qkv[F][3 * D], q_t[D][P] = {}, x_t[D][P] = {}, mixed_t[D][P], y_t[D][P];

    // Two tokens at a time: each weight vector loaded once serves both (loads, not arithmetic,
    // limited the one-token loop).
    for (int i0 = 0; i0 < F; i0 += 2) {
        constexpr int W = QV;
        const int i1 = i0 + 1 < F ? i0 + 1 : i0;
        v8 acc0[W], acc1[W];
        for (int v = 0; v < W; v++) acc0[v] = acc1[v] = load(bqkv + 8 * v);
        for (int c = 0; c < D; c++) {
            const float x0 = x[i0 * D + c], x1 = x[i1 * D + c];
            for (int v = 0; v < W; v++) {
                const v8 w = load(wqkv_t + c * 3 * D + 8 * v);
                acc0[v] += w * x0;
                acc1[v] += w * x1;
            }
        }
        for (int v = 0; v < W; v++) {
            store(qkv[i0] + 8 * v, acc0[v]);
            store(qkv[i1] + 8 * v, acc1[v]);
        }
    }
    for (int i = 0; i < F; i++)
        for (int c = 0; c < D; c++) {
            q_t[c][i] = qkv[i][c];
            x_t[c][i] = x[i * D + c];
        }
    for (int h = 0; h < H; h++)
        head_forward<PRODUCTIVE>(q_t + h * d, qkv, D + h * d, 2 * D + h * d, product_weights + h * d,
                                 mask ? mask + h * F * P : nullptr, attention + h * F * P, mixed_t + h * d);
    if (saved) {
        for (int i = 0; i < F; i++)
            for (int v = 0; v < QV; v++) store(saved->qkv + i * 3 * D + 8 * v, load(qkv[i] + 8 * v));
        for (int c = 0; c < D; c++)
            for (int f = 0; f < FV; f++) store(saved->mixed_t + c * P + 8 * f, load(mixed_t[c] + 8 * f));
    }
    for (int f = 0; f < FV; f++) {
        v8 out[D], mean = {}, var = {};
        for (int o = 0; o < D; o++) {
            v8 acc = load(x_t[o] + 8 * f) + bout[o];
            for (int c = 0; c < D; c++) acc += load(mixed_t[c] + 8 * f) * wout[o * D + c];
            out[o] = acc;
            mean += acc;
        }
        mean *= 1.0f / (float)D;
        for (int o = 0; o < D; o++) {
            out[o] -= mean;
            var += out[o] * out[o];
        }
        v8 inv_std;
        for (int k = 0; k < 8; k++) inv_std[k] = 1.0f / __builtin_sqrtf(var[k] * (1.0f / (float)D) + eps);
        for (int o = 0; o < D; o++) store(y_t[o] + 8 * f, out[o] * inv_std * ln_weight[o] + ln_bias[o]);
        if (saved) {
            for (int o = 0; o < D; o++) store(saved->xhat_t + o * P + 8 * f, out[o] * inv_std);
            store(saved->istd + 8 * f, inv_std);
        }
    }
    for (int i = 0; i < F; i++)
        for (int o = 0; o < D; o++) y[i * D + o] = y_t[o][i];
}

/* A batch of people on ``threads`` OpenMP threads (PyTorch's own runtime: kernels.py loads this
 * library into a process where torch has loaded libgomp, so its idle workers, still spinning
 * after PyTorch's last operator, take this work rather than compete with a second pool for the
 * cores). Row-major float32 arrays: x and y (B, F, D); wqkv_t (D, 3D),
 * the qkv Linear's weight transposed; wout (D, D), the output Linear's weight as it is;
 * product_weights (H, D / H) times the softmax scale (all equal to the scale for self-attention);
 * attention (B, H, F, P) with P the fields rounded up to a multiple of 8, key by query, before
 * dropout. Training also passes mask (B, H, F, P), dropout multipliers by key, and the Saved
 * arrays for attention_layer_backward: qkv (B, F, 3D), mixed_t and xhat_t (B, D, P), istd (B, P);
 * inference passes nulls for all five. Returns 0, or -1 when called for another shape than the
 * one compiled. */
extern "C" int field_attention_layer(
    int64_t batch, int threads, int fields, int width, int heads, const float *x, const float *wqkv_t,
    const float *bqkv, const float *product_weights, const float *wout, const float *bout,
    const float *ln_weight, const float *ln_bias, float eps, const float *mask, int productive, float *y,
    float *attention, float *qkv, float *mixed_t, float *xhat_t, float *istd)
{
    if (fields != F || width != D || heads != H) return -1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < batch; b++) {
        Saved saved{};
        if (qkv) saved = {qkv + b * F * 3 * D, mixed_t + b * D * P, xhat_t + b * D * P, istd + b * P};
        const Saved *keep = qkv ? &saved : nullptr;
        const float *m = mask ? mask + b * H * F * P : nullptr;
        if (productive)
            layer_one<true>(x + b * F * D, wqkv_t, bqkv, product_weights, wout, bout, ln_weight, ln_bias, eps,
                            y + b * F * D, attention + b * H * F * P, m, keep);
        else
            layer_one<false>(x + b * F * D, wqkv_t, bqkv, product_weights, wout, bout, ln_weight, ln_bias, eps,
                             y + b * F * D, attention + b * H * F * P, m, keep);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Training, the attention core's backward (scores, softmax, dropout, mixing), per person, for
 * attention_layer_backward below. For one head, with
 * qw = q . pws (pws: product weights times the scale), S = qw K^T, A = softmax(S), Ad = A . M
 * (M: dropout multipliers), O = Ad V and out = O (or q . O, productive):
 *   dO = dout (. q);  dq_direct = dout . O (productive);  dV = Ad^T dO;
 *   dA = (dO V^T) . M;  dS = A . (dA - rowsum(dA . A));
 *   dqw = dS K;  dK = dS^T qw;  dq = dqw . pws (+ dq_direct);  dpw = sum(dqw . q) * scale.
 * ------------------------------------------------------------------------------------------- */

template <bool PRODUCTIVE>
INLINE void core_backward_one(
    const float *__restrict qkv, const float *__restrict pws, const float *__restrict mask,
    const float *__restrict attention, const float *__restrict grad_out, float *__restrict grad_qkv,
    v8 (*__restrict pw_sums)[FV])
{
    constexpr int d = D / H, HV = d / 8;
    const auto rows = reinterpret_cast<const float (*)[3 * D]>(qkv);
    const auto grad_rows = reinterpret_cast<float (*)[3 * D]>(grad_qkv);
    alignas(32) float q_t[D][P] = {}, g_t[D][P] = {}, dq_t[D][P];
    for (int i = 0; i < F; i++)
        for (int c = 0; c < D; c++) {
            q_t[c][i] = rows[i][c];
            g_t[c][i] = grad_out[i * D + c];
        }
    for (int h = 0; h < H; h++) {
        const int q0 = h * d, k0 = D + q0, v0 = 2 * D + q0;
        const float *att = attention + h * F * P, *msk = mask ? mask + h * F * P : nullptr;
        v8 a[F][FV];
        alignas(32) float ad_m[F][P], ds_m[F][P], do_t[d][P], do_rows[F][d], qw_rows[F][d], dqd_t[d][P];
        for (int j = 0; j < F; j++)
            for (int f = 0; f < FV; f++) {
                a[j][f] = load(att + j * P + 8 * f);
                store(ad_m[j] + 8 * f, msk ? a[j][f] * load(msk + j * P + 8 * f) : a[j][f]);
            }
        for (int c = 0; c < d; c++)
            for (int f = 0; f < FV; f++) {
                v8 g = load(g_t[q0 + c] + 8 * f);
                if (PRODUCTIVE) {
                    v8 o = {};
                    for (int j = 0; j < F; j++) o += load(ad_m[j] + 8 * f) * rows[j][v0 + c];
                    store(dqd_t[c] + 8 * f, g * o);
                    g *= load(q_t[q0 + c] + 8 * f);
                }
                store(do_t[c] + 8 * f, g);
            }
        for (int i = 0; i < F; i++)
            for (int c = 0; c < d; c++) {
                do_rows[i][c] = do_t[c][i];
                qw_rows[i][c] = rows[i][q0 + c] * pws[q0 + c];
            }
        for (int j = 0; j < F; j++)  // dV = Ad^T dO, a row per key
            for (int u = 0; u < HV; u++) {
                v8 acc = {};
                for (int i = 0; i < F; i++) acc += load(do_rows[i] + 8 * u) * ad_m[j][i];
                store(grad_rows[j] + v0 + 8 * u, acc);
            }
        v8 ds[F][FV], row_sums[FV];
        for (int f = 0; f < FV; f++) row_sums[f] = v8{};
        for (int j = 0; j < F; j++)
            for (int f = 0; f < FV; f++) {
                v8 da = {};
                for (int c = 0; c < d; c++) da += load(do_t[c] + 8 * f) * rows[j][v0 + c];
                if (msk) da *= load(msk + j * P + 8 * f);
                ds[j][f] = da;
                row_sums[f] += da * a[j][f];
            }
        for (int j = 0; j < F; j++)
            for (int f = 0; f < FV; f++) {
                ds[j][f] = a[j][f] * (ds[j][f] - row_sums[f]);
                store(ds_m[j] + 8 * f, ds[j][f]);
            }
        for (int c = 0; c < d; c++)
            for (int f = 0; f < FV; f++) {
                v8 dqw = {};
                for (int j = 0; j < F; j++) dqw += ds[j][f] * rows[j][k0 + c];
                pw_sums[q0 + c][f] += dqw * load(q_t[q0 + c] + 8 * f);
                v8 dq = dqw * pws[q0 + c];
                if (PRODUCTIVE) dq += load(dqd_t[c] + 8 * f);
                store(dq_t[q0 + c] + 8 * f, dq);
            }
        for (int j = 0; j < F; j++)  // dK = dS^T qw, a row per key
            for (int u = 0; u < HV; u++) {
                v8 acc = {};
                for (int i = 0; i < F; i++) acc += load(qw_rows[i] + 8 * u) * ds_m[j][i];
                store(grad_rows[j] + k0 + 8 * u, acc);
            }
    }
    for (int i = 0; i < F; i++)
        for (int c = 0; c < D; c++) grad_rows[i][c] = dq_t[c][i];
}

/* ---------------------------------------------------------------------------------------------
 * Training: the whole layer (projections, core, output projection, residual, LayerNorm) forward
 * and backward, for an autograd Function in kernels.py. The forward is field_attention_layer with a
 * dropout mask and what the backward needs kept (Saved). The backward, per person, from dy:
 *
 *   LayerNorm:   gh = dy . ln_w;   dpre = istd (gh - mean_o(gh) - xhat mean_o(gh . xhat))
 *                dln_w += dy . xhat;   dln_b += dy
 *   output:      dW_out += dpre^T mixed;   db_out += dpre;   dmixed = dpre W_out
 *   core:        dqkv (and the product weights' sums) from dmixed (core_backward_one)
 *   projections: dW_qkv += dqkv^T x;   db_qkv += dqkv;   dx = dpre + dqkv W_qkv
 *
 * PyTorch ran the projections' products as batched matrix products over all tokens (fast for
 * large matrices, slow for 16 x 48 ones) and the LayerNorm and residual as passes of their own:
 * about 1.6 ms a layer, forward and backward, at 1,024 people on a Cascade Lake core pair
 * (PyTorch's profiler), besides the core; here one pass per person each way.
 * The parameter gradients are summed per thread (LayerGrads) and written to partial, one row of
 * LAYER_GRADS floats per thread: W_qkv (3D x D), b_qkv (3D), W_out (D x D), b_out, ln_w, ln_b and
 * the product weights' sums (D each); kernels.py adds the rows up.
 * ------------------------------------------------------------------------------------------- */
constexpr int LAYER_GRADS = 3 * D * D + 3 * D + D * D + 4 * D;

struct LayerGrads {
    alignas(32) float wqkv[3 * D][D], bqkv[3 * D];  // rows as the Linear's weight: a vector over inputs
    v8 wout[D][D][FV], bout[D][FV], ln_w[D][FV], ln_b[D][FV], pw[D][FV];  // vectors over the tokens

    void write(float *out) const {
        const auto lanes = [](const v8 *v, int n) {
            float total = 0.0f;
            for (int f = 0; f < n; f++)
                for (int k = 0; k < 8; k++) total += v[f][k];
            return total;
        };
        for (int k = 0; k < 3 * D; k++)
            for (int c = 0; c < D; c++) *out++ = wqkv[k][c];
        for (int k = 0; k < 3 * D; k++) *out++ = bqkv[k];
        for (int o = 0; o < D; o++)
            for (int c = 0; c < D; c++) *out++ = lanes(wout[o][c], FV);
        const v8 (*const parts[])[FV] = {bout, ln_w, ln_b, pw};
        for (const auto *part : parts)
            for (int o = 0; o < D; o++) *out++ = lanes(part[o], FV);
    }
};

template <bool PRODUCTIVE>
INLINE void layer_backward_one(
    const float *__restrict x, const float *__restrict dy, const float *__restrict wqkv,
    const float *__restrict pws, const float *__restrict wout, const float *__restrict ln_weight,
    const float *__restrict mask, const float *__restrict attention, const Saved &saved, float *__restrict dx,
    LayerGrads &g)
{
    constexpr int DV = D / 8, QV = 3 * D / 8;
    alignas(32) float dy_t[D][P] = {}, dpre_t[D][P], dmixed_t[D][P], dmixed[F][D], dqkv[F][3 * D];
    for (int i = 0; i < F; i++)
        for (int o = 0; o < D; o++) dy_t[o][i] = dy[i * D + o];
    for (int f = 0; f < FV; f++) {
        const v8 istd = load(saved.istd + 8 * f);
        v8 gh[D], xh[D], mean_gh = {}, mean_ghx = {};
        for (int o = 0; o < D; o++) {
            const v8 gy = load(dy_t[o] + 8 * f);
            xh[o] = load(saved.xhat_t + o * P + 8 * f);
            g.ln_w[o][f] += gy * xh[o];
            g.ln_b[o][f] += gy;
            gh[o] = gy * ln_weight[o];
            mean_gh += gh[o];
            mean_ghx += gh[o] * xh[o];
        }
        mean_gh *= 1.0f / (float)D;
        mean_ghx *= 1.0f / (float)D;
        v8 dpre[D];
        for (int o = 0; o < D; o++) {
            dpre[o] = istd * (gh[o] - mean_gh - xh[o] * mean_ghx);  // zero in lanes past F: dy is
            store(dpre_t[o] + 8 * f, dpre[o]);                      // zero there
            g.bout[o][f] += dpre[o];
        }
        for (int c = 0; c < D; c++) {
            const v8 mixed = load(saved.mixed_t + c * P + 8 * f);
            v8 dm = {};
            for (int o = 0; o < D; o++) {
                g.wout[o][c][f] += dpre[o] * mixed;
                dm += dpre[o] * wout[o * D + c];
            }
            store(dmixed_t[c] + 8 * f, dm);
        }
    }
    for (int i = 0; i < F; i++)
        for (int c = 0; c < D; c++) dmixed[i][c] = dmixed_t[c][i];
    core_backward_one<PRODUCTIVE>(saved.qkv, pws, mask, attention, dmixed[0], dqkv[0], g.pw);
    // The projections' gradients over all F tokens at once, a row k of W_qkv at a time: the
    // tokens' inputs (and for dx, its sums) stay in registers, each weight row is read and each
    // accumulator row written once per person (a token at a time, they were once per token).
    v8 xr[F][DV], dxr[F][DV];
    for (int i = 0; i < F; i++)
        for (int u = 0; u < DV; u++) {
            const float(*col)[P] = dpre_t + 8 * u;
            xr[i][u] = load(x + i * D + 8 * u);
            dxr[i][u] = v8{col[0][i], col[1][i], col[2][i], col[3][i], col[4][i], col[5][i], col[6][i], col[7][i]};
        }
    for (int v = 0; v < QV; v++) {
        v8 sum = load(g.bqkv + 8 * v);
        for (int i = 0; i < F; i++) sum += load(dqkv[i] + 8 * v);
        store(g.bqkv + 8 * v, sum);
    }
    for (int k = 0; k < 3 * D; k++) {
        v8 acc[DV], w[DV];
        for (int u = 0; u < DV; u++) {
            acc[u] = load(g.wqkv[k] + 8 * u);
            w[u] = load(wqkv + k * D + 8 * u);
        }
        for (int i = 0; i < F; i++) {
            const float s = dqkv[i][k];
            for (int u = 0; u < DV; u++) {
                acc[u] += s * xr[i][u];
                dxr[i][u] += s * w[u];
            }
        }
        for (int u = 0; u < DV; u++) store(g.wqkv[k] + 8 * u, acc[u]);
    }
    for (int i = 0; i < F; i++)
        for (int u = 0; u < DV; u++) store(dx + i * D + 8 * u, dxr[i][u]);
}

/* The gradients of field_attention_layer (with its Saved arrays) from dy (B, F, D): dx (B, F, D), the residual's and the
 * projections' parts together; wqkv is the qkv Linear's weight as it is (3D, D). partial
 * (threads, LAYER_GRADS): each thread's parameter sums (LayerGrads::write). */
extern "C" int attention_layer_backward(
    int64_t batch, int threads, int fields, int width, int heads, const float *x, const float *dy,
    const float *wqkv, const float *pws, const float *wout, const float *ln_weight, const float *mask,
    const float *attention, const float *qkv, const float *mixed_t, const float *xhat_t, const float *istd,
    int productive, float *dx, float *partial)
{
    if (fields != F || width != D || heads != H) return -1;
#pragma omp parallel num_threads(threads)
    {
        LayerGrads g = {};
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            const Saved saved{const_cast<float *>(qkv + b * F * 3 * D), const_cast<float *>(mixed_t + b * D * P),
                              const_cast<float *>(xhat_t + b * D * P), const_cast<float *>(istd + b * P)};
            const float *m = mask ? mask + b * H * F * P : nullptr;
            if (productive)
                layer_backward_one<true>(x + b * F * D, dy + b * F * D, wqkv, pws, wout, ln_weight, m,
                                         attention + b * H * F * P, saved, dx + b * F * D, g);
            else
                layer_backward_one<false>(x + b * F * D, dy + b * F * D, wqkv, pws, wout, ln_weight, m,
                                          attention + b * H * F * P, saved, dx + b * F * D, g);
        }
        g.write(partial + (int64_t)omp_get_thread_num() * LAYER_GRADS);
    }
    return 0;
}

/* The length of a row of attention_layer_backward's partial, for kernels.py to check. */
extern "C" int attention_layer_grads() { return LAYER_GRADS; }
#endif  // FIELDS
