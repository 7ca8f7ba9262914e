/*
 * relocate_vec.h - the relocation's vector kernels (the copy, the re-check's digest, the
 * collection's line scan), written once and compiled once per vector width.
 *
 * Included by relocate.c only, once per instance, with
 *   VEC_SFX     the name suffix of the instance (copy_words_<VEC_SFX>, ...),
 *   VEC_BYTES   the width of its vectors, 16, 32 or 64,
 *   VEC_TARGET  its function attribute (target("avx2"), ...; empty for the baseline).
 * No include guard: that is the point.  The macros are undefined again at the end.
 *
 * Why not one body with GCC's target_clones: the body's vector type would be one width for
 * every clone.  That is how it was built until 2026-12-02, with 64-byte vectors, and only the
 * AVX-512 clone came out as vector code: in the AVX2 and SSE2 clones GCC split every volatile
 * 64-byte load into 16-byte pieces, spilled them to the stack and re-read them 32 bytes at a time
 * (store-forwarding stalls on every line; 102 stack references in the AVX2 copy against one in
 * the AVX-512 one).  On an AVX2-only machine (AMD EPYC, Zen 3) the copy of four tables took
 * 5.7 us instead of ~0.3.  Each width here uses vectors the target holds in one register.
 */

#define VEC_CAT2(a, b) a##_##b
#define VEC_CAT(a, b) VEC_CAT2(a, b)
#define VEC_NAME(n) VEC_CAT(n, VEC_SFX)
#define VEC_T VEC_NAME(vec)
#define VEC_LANES (VEC_BYTES / 8)
#define VEC_PER_128 (128 / VEC_BYTES) /* vectors per 16 words: one step of the copy */
#define VEC_PER_LINE (64 / VEC_BYTES) /* vectors per 64-byte line */

typedef uint64_t VEC_T __attribute__((vector_size(VEC_BYTES), may_alias, aligned(8)));

static inline __attribute__((always_inline)) VEC_TARGET uint64_t VEC_NAME(vec_sum)(VEC_T v)
{
	uint64_t s = 0;
	for (int j = 0; j < VEC_LANES; j++)
		s += v[j];
	return s;
}

static inline __attribute__((always_inline)) VEC_TARGET uint64_t VEC_NAME(vec_or)(VEC_T v)
{
	uint64_t s = 0;
	for (int j = 0; j < VEC_LANES; j++)
		s |= v[j];
	return s;
}

/*
 * next_used_line() - the first 64-byte line at or after @line of the @nlines lines of table
 * @t that holds a non-zero entry; @nlines when there is none.  Vector loads, four lines OR-ed
 * per test.  The loads race with the fault path publishing entries (collection holds no table
 * lock), harmlessly: a non-zero entry found is re-read with an acquire load before it is used,
 * and an entry published after the scan passed it is one the collection could have missed
 * anyway (a table populated after the collection is created on the mm's node, not moved).
 * Not instrumented by ThreadSanitizer for that reason, as copy_words().
 */
static VEC_TARGET __attribute__((noinline, no_sanitize_thread)) uint32_t
VEC_NAME(next_used_line)(const void *t, uint32_t line, uint32_t nlines)
{
	const volatile VEC_T *s = t;
	for (; line + 4 <= nlines; line += 4) {
		VEC_T x = s[line * VEC_PER_LINE];
#pragma GCC unroll 16
		for (int k = 1; k < 4 * VEC_PER_LINE; k++)
			x |= s[line * VEC_PER_LINE + k];
		if (VEC_NAME(vec_or)(x))
			break;
	}
	for (; line < nlines; line++) {
		VEC_T x = s[line * VEC_PER_LINE];
#pragma GCC unroll 4
		for (int k = 1; k < VEC_PER_LINE; k++)
			x |= s[line * VEC_PER_LINE + k];
		if (VEC_NAME(vec_or)(x))
			return line;
	}
	return nlines;
}

/*
 * copy_words() - copy words [@i, @nw) of table @from into @to (@i a multiple of 16), 128
 * bytes an iteration; Return: the digest of what was STORED.
 *
 * The source loads race by design with CPUs' A/D CAS on the same entries (the brief's
 * "plain/vectorised loads followed by a re-check"): what a CPU wrote after a load - or, were
 * a load ever torn, any part of an entry - differs from the final old entry by bits that a
 * change can only set in d(), so the merge's re-check sees a different digest and compares
 * the table entry by entry (THE COPY AND ITS DIGEST).  The loads are volatile so that the
 * compiler cannot load an entry twice: the value stored and the value summed are one register,
 * which is what makes the digest the digest of the new copy.  The stores go to an unlinked
 * frame nobody reads before repoint_link()'s seq_cst CAS publishes it (a walker's acquire
 * load of the parent entry pairs with it).  ThreadSanitizer is told not to instrument this one
 * function (it would report the intended race); everything else - the re-check's reads of the
 * old copy, the merge, the CPUs - stays instrumented.
 */
static VEC_TARGET __attribute__((noinline, no_sanitize_thread)) uint64_t
VEC_NAME(copy_words)(const void *from, void *to, uint32_t i, uint32_t nw, uint64_t flip,
		     uint64_t *any)
{
	const volatile VEC_T *s = from;
	VEC_T *d = to;
	VEC_T f, a0 = { 0 }, a1 = { 0 }, o = { 0 };
	for (int j = 0; j < VEC_LANES; j++)
		f[j] = flip;
	for (; i + 16 <= nw; i += 16) {
		uint32_t v = i / VEC_LANES;
#pragma GCC unroll 8
		for (int k = 0; k < VEC_PER_128; k += 2) {
			VEC_T x0 = s[v + k], x1 = s[v + k + 1];
			d[v + k] = x0;
			d[v + k + 1] = x1;
			a0 += x0 ^ f;
			a1 += x1 ^ f;
			o |= x0 | x1;
		}
	}
	uint64_t sum = VEC_NAME(vec_sum)(a0 + a1), or = VEC_NAME(vec_or)(o);
	const volatile u64_word *sw = from;
	u64_word *dw = to;
	for (; i < nw; i++) { /* tables below 128 bytes: PAE's 32-byte top */
		uint64_t x = sw[i];
		dw[i] = x;
		sum += x ^ flip;
		or |= x;
	}
	*any |= or;
	return sum;
}

/*
 * table_digest() - the digest of the old copy @t after the shootdown, as copy_words() computed
 * it: plain vectorisable loads of a table nobody writes any more (THE COPY AND ITS DIGEST).
 */
static VEC_TARGET __attribute__((noinline)) uint64_t
VEC_NAME(table_digest)(const void *t, uint32_t nw, uint64_t flip)
{
	const VEC_T *s = t;
	VEC_T f, a0 = { 0 }, a1 = { 0 };
	for (int j = 0; j < VEC_LANES; j++)
		f[j] = flip;
	uint32_t i = 0;
	for (; i + 16 <= nw; i += 16) {
		uint32_t v = i / VEC_LANES;
#pragma GCC unroll 8
		for (int k = 0; k < VEC_PER_128; k += 2) {
			a0 += s[v + k] ^ f;
			a1 += s[v + k + 1] ^ f;
		}
	}
	uint64_t sum = VEC_NAME(vec_sum)(a0 + a1);
	const u64_word *w = t;
	for (; i < nw; i++)
		sum += w[i] ^ flip;
	return sum;
}

#undef VEC_PER_LINE
#undef VEC_PER_128
#undef VEC_LANES
#undef VEC_T
#undef VEC_NAME
#undef VEC_CAT
#undef VEC_CAT2
#undef VEC_SFX
#undef VEC_BYTES
#undef VEC_TARGET
