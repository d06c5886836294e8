/*
 * The network step in one precision. kernels.c includes this file twice, with
 * REAL = float and REAL = double; FN(name) gives each function its suffix.
 *
 * Each block names the PyTorch code whose arithmetic it repeats. Operations
 * happen in that code's order and in REAL precision, and Python floats enter
 * as REAL, which is how torch applies a Python scalar to a tensor.
 */

/* torch.clamp with optional bounds; NaN stays NaN. */
static inline REAL FN(clamp)(REAL x, int has_low, REAL low, int has_high, REAL high) {
    if (has_low && x < low) x = low;
    if (has_high && x > high) x = high;
    return x;
}

/* ---------------------------------------------------------- row prefetch */

/*
 * A step reads the weight rows of the inputs that spiked, in the order of
 * their list. Each row starts a new stream, which the hardware prefetcher
 * picks up only after a few misses. So while one row is added, the same
 * span of the next row is requested, one cache line per request:
 * PREFETCH_SPAN weights at a time for the plain step, DEFERRED_PREFETCH_SPAN
 * for the pass of deferred STDP, which does more work per weight. On a
 * 1000 x 10000 dense connection this took 6 % off the plain step and 28 %
 * off the step with deferred STDP (measured on a 2-core AMD EPYC). Weights
 * that fit in the last-level cache skip it, because there the requests only
 * cost instructions.
 */
#define PREFETCH_SPAN 64
#define DEFERRED_PREFETCH_SPAN 256
#define PREFETCH_MIN_BYTES ((size_t)16 << 20)
#define LINE_BYTES 64

/*
 * Split the columns [first, last) around column `skip`, the neuron itself in
 * a lateral connection: the columns [first, *cut) and [*resume, last) remain.
 */
static inline void FN(split_span)(int first, int last, int skip, int *cut, int *resume) {
    int at = skip;
    if (at < first) at = first;
    if (at > last) at = last;
    *cut = at;
    *resume = at;
    if (at == skip && at < last) *resume = at + 1;
}

/* Request the bytes [from, to) of `base` for reading. */
static inline void FN(prefetch_read)(const void *base, size_t from, size_t to) {
    for (size_t q = from; q < to; q += LINE_BYTES) __builtin_prefetch((const char *)base + q, 0, 3);
}

/* Request the bytes [from, to) of `base` for writing. */
static inline void FN(prefetch_write)(const void *base, size_t from, size_t to) {
    for (size_t q = from; q < to; q += LINE_BYTES) __builtin_prefetch((const char *)base + q, 1, 3);
}

/* Return whether the rows of connection c are prefetched: its weights exceed PREFETCH_MIN_BYTES. */
static inline int FN(prefetches)(const Conn *c) {
    return sizeof(REAL) * (size_t)c->pre_size * (size_t)c->post_size >= PREFETCH_MIN_BYTES;
}

/* ------------------------------------------------------------ delay lines */

/*
 * A dense or lateral connection with delays keeps, during a call, its future
 * input in a line of 2 * slots cells per sample instead of the ring buffer
 * `in_flight`: the cell of step t + d lies d cells after the current one, so
 * a spike adds its row through the offset table (d * post_size + j) with no
 * wrap-around test per synapse. Every `slots` steps the live cells move back
 * to the start of the line. The line contains the ring's cells in the same
 * order, so every sum happens as in the ring. The ring is copied in when the
 * call starts and back when it ends.
 */
static int FN(lines_open)(const Net *net, Scratch *w, int64_t step0) {
    const int B = net->batch;
    for (int ci = 0; ci < net->n_conns; ci++) {
        const Conn *c = &net->conns[ci];
        if (!c->offset) continue;
        const int64_t S = c->slots, P = c->post_size, L = 2 * S;
        REAL *line = (REAL *)calloc((size_t)(B * L * P), sizeof(REAL));
        if (!line) return -1;
        const REAL *ring = (const REAL *)c->in_flight;
        for (int b = 0; b < B; b++)
            for (int64_t m = 0; m < S; m++)
                memcpy(line + ((size_t)b * L + m) * P, ring + ((size_t)b * S + (size_t)((step0 + m) % S)) * P,
                       sizeof(REAL) * (size_t)P);
        w->line[ci] = line;
        w->line_position[ci] = 0;
    }
    return 0;
}

/* After a step: move each line on by one cell, and its live cells back to the start when it reaches the middle. */
static void FN(lines_advance)(const Net *net, Scratch *w) {
    const int B = net->batch;
    for (int ci = 0; ci < net->n_conns; ci++) {
        if (!w->line[ci]) continue;
        const Conn *c = &net->conns[ci];
        const int64_t S = c->slots, P = c->post_size, L = 2 * S;
        if (++w->line_position[ci] < S) continue;
        REAL *line = (REAL *)w->line[ci];
        for (int b = 0; b < B; b++) {
            REAL *sample = line + (size_t)b * L * P;
            memmove(sample, sample + (size_t)S * P, sizeof(REAL) * (size_t)(S * P));
            memset(sample + (size_t)S * P, 0, sizeof(REAL) * (size_t)(S * P));
        }
        w->line_position[ci] = 0;
    }
}

/* Copy each line back into its ring buffer, where step `next` reads slot next % slots. */
static void FN(lines_close)(const Net *net, Scratch *w, int64_t next) {
    const int B = net->batch;
    for (int ci = 0; ci < net->n_conns; ci++) {
        if (!w->line[ci]) continue;
        const Conn *c = &net->conns[ci];
        const int64_t S = c->slots, P = c->post_size, L = 2 * S;
        const REAL *line = (const REAL *)w->line[ci];
        REAL *ring = (REAL *)c->in_flight;
        for (int b = 0; b < B; b++)
            for (int64_t m = 0; m < S; m++)
                memcpy(ring + ((size_t)b * S + (size_t)((next + m) % S)) * P,
                       line + ((size_t)b * L + w->line_position[ci] + m) * P, sizeof(REAL) * (size_t)P);
        free(w->line[ci]);
        w->line[ci] = NULL;
    }
}

/* The cell that contains sample b's input to connection ci in the current step. */
static inline REAL *FN(cell)(const Net *net, const Scratch *w, int ci, int b, const int64_t *slot_now) {
    const Conn *c = &net->conns[ci];
    if (w->line[ci])
        return (REAL *)w->line[ci] + ((size_t)b * 2 * c->slots + (size_t)w->line_position[ci]) * c->post_size;
    return (REAL *)c->in_flight + ((size_t)b * c->slots + (size_t)slot_now[ci]) * c->post_size;
}

/* The ring slot that a connection without a delay line fills this step: `shift` slots after the current one. */
static inline int64_t FN(shifted_slot)(const Conn *c, int64_t now) {
    const int64_t slot = now + c->shift;
    return slot >= c->slots ? slot - c->slots : slot;
}

/* ------------------------------------------------------------ populations */

/* Store `value` into the step's sum of inputs, or add it when an earlier input is there. */
static inline void FN(accumulate)(REAL *sum, int started, int j, REAL value) {
    sum[j] = started ? sum[j] + value : value;
}

/* Read and clear cell j of a connection's slot, plus its bias if it has one. */
static inline REAL FN(take)(REAL *restrict cell, const REAL *restrict bias, int j) {
    const REAL arrived = cell[j];
    cell[j] = 0;
    return bias ? arrived + bias[j] : arrived;
}

/*
 * Read and clear one sample's slot of each incoming connection, add the bias
 * and apply the synapse: Network._gather_input and the synapses' forward.
 * Voltage jumps collect in `jump` and currents in `current`, summed in the
 * order of the connections and then the injected currents, as the PyTorch
 * path sums them. Returns which of the two got any input (bit 0: current,
 * bit 1: jump).
 */
static int FN(gather_input)(const Net *net, const Scratch *w, const Node *node, int b, const int64_t *slot_now,
                            int64_t step, REAL *current, REAL *jump) {
    const int N = node->size;
    const REAL *v = (const REAL *)node->v + (size_t)b * N;
    int has_current = 0, has_jump = 0;

    for (int k = 0; k < node->in_count; k++) {
        const int ci = net->in_list[node->in_first + k];
        const Conn *c = &net->conns[ci];
        REAL *cell = FN(cell)(net, w, ci, b, slot_now);
        const REAL *bias = (const REAL *)c->bias;
        const REAL *decay_a = (const REAL *)c->synapse_decay_a;
        const REAL *decay_b = (const REAL *)c->synapse_decay_b;
        const REAL *parameter = (const REAL *)c->synapse_parameter;
        REAL *state_a = c->synapse_a ? (REAL *)c->synapse_a + (size_t)b * N : NULL;
        REAL *state_b = c->synapse_b ? (REAL *)c->synapse_b + (size_t)b * N : NULL;

        /* One loop per synapse kind, so that each one vectorises. */
        switch (c->synapse) {
        case SYN_VOLTAGE:
            for (int j = 0; j < N; j++) {
                const REAL arrived = FN(take)(cell, bias, j);
                FN(accumulate)(jump, has_jump, j, arrived);
            }
            break;
        case SYN_CHARGE: {
            const REAL dt = (REAL)c->dt;
            for (int j = 0; j < N; j++) {
                const REAL arrived = FN(take)(cell, bias, j);
                FN(accumulate)(current, has_current, j, arrived / dt);
            }
            break;
        }
        case SYN_EXPONENTIAL:
            for (int j = 0; j < N; j++) {
                const REAL arrived = FN(take)(cell, bias, j);
                state_a[j] = state_a[j] * decay_a[j] + arrived;
                FN(accumulate)(current, has_current, j, state_a[j]);
            }
            break;
        case SYN_CONDUCTANCE: /* g (e_rev - v), with v from before this step's integration */
            for (int j = 0; j < N; j++) {
                const REAL arrived = FN(take)(cell, bias, j);
                state_a[j] = state_a[j] * decay_a[j] + arrived;
                FN(accumulate)(current, has_current, j, state_a[j] * (parameter[j] - v[j]));
            }
            break;
        default: /* SYN_DOUBLE_EXPONENTIAL: N (s - r) */
            for (int j = 0; j < N; j++) {
                const REAL arrived = FN(take)(cell, bias, j);
                state_a[j] = state_a[j] * decay_a[j] + arrived;
                state_b[j] = state_b[j] * decay_b[j] + arrived;
                FN(accumulate)(current, has_current, j, parameter[j] * (state_b[j] - state_a[j]));
            }
            break;
        }
        if (c->synapse == SYN_VOLTAGE) has_jump = 1;
        else has_current = 1;
    }

    /* Injected constant currents (CurrentInput), 0 nA outside their window. */
    for (int k = 0; k < node->injection_count; k++) {
        const Injection *injection = &net->injections[node->injection_first + k];
        const int on = step >= injection->start && (injection->stop < 0 || step < injection->stop);
        const REAL *amplitude = (const REAL *)injection->amplitude + (size_t)b * N;
        for (int j = 0; j < N; j++) FN(accumulate)(current, has_current, j, on ? amplitude[j] : (REAL)0);
        has_current = 1;
    }
    return has_current | (has_jump << 1);
}

/* The parameters of a LIF population, per neuron. */
typedef struct {
    const REAL *v_rest, *v_reset, *v_threshold, *resistance, *decay;
    const int32_t *refractory_steps;
} FN(LifArrays);

/*
 * Advance one sample's LIF neurons by one step, without branches. An input
 * that is NULL is absent. population_step passes each input as NULL or not
 * in separate calls, so the compiler makes one loop per combination and
 * vectorises each one.
 *
 * This function and population_step are compiled with no-trapping-math,
 * because no code here reads floating point exceptions and without it GCC
 * keeps the threshold comparison out of vectors. The option stays off for
 * the rest of the file, where it turned the clamps of the weight updates
 * into slower branches. NOTE: `optimize` is a GCC attribute. Other
 * compilers ignore it (with a warning), and the loop then stays scalar.
 */
static inline __attribute__((always_inline, optimize("no-trapping-math"))) void
FN(lif_sample)(const FN(LifArrays) *a, REAL *restrict v, int32_t *restrict refractory, REAL *restrict spikes,
               const REAL *restrict current, const REAL *restrict jump, const REAL *restrict theta, int N) {
    for (int j = 0; j < N; j++) {
        /* count_down: the counter drops by one; only neurons at 0 integrate. */
        int32_t counter = refractory[j] - 1;
        counter = counter < 0 ? 0 : counter;
        const int free_to_fire = counter == 0;

        /* Exact relaxation towards v_inf = v_rest + R I, then the jump. */
        const REAL v_inf = current ? a->v_rest[j] + a->resistance[j] * current[j] : a->v_rest[j];
        REAL v_new = v_inf + (v[j] - v_inf) * a->decay[j];
        if (jump) v_new = v_new + jump[j];

        /* hold_and_fire: refractory neurons stay at reset; the rest fire at v - threshold >= 0. */
        v_new = free_to_fire ? v_new : a->v_reset[j];
        const REAL threshold = theta ? a->v_threshold[j] + theta[j] : a->v_threshold[j];
        const int fired = free_to_fire & (v_new - threshold >= 0);
        v[j] = fired ? a->v_reset[j] : v_new;
        refractory[j] = fired ? a->refractory_steps[j] : counter;
        spikes[j] = fired ? (REAL)1 : (REAL)0;
    }
}

/* Write the indices of the nonzero entries of spikes[0 .. N) into `list`, in order, and return their number. */
static inline int32_t FN(list_spikes)(const REAL *restrict spikes, int N, int32_t *restrict list) {
    int32_t count = 0;
    int j = 0;
#if defined(__AVX512F__)
    /* One comparison covers sixteen floats (or eight doubles), and most of them find no spike. */
    const int lanes = 64 / (int)sizeof(REAL);
    for (; j + lanes <= N; j += lanes) {
        uint32_t mask = sizeof(REAL) == 4
                            ? (uint32_t)_mm512_cmp_ps_mask(_mm512_loadu_ps((const float *)(spikes + j)), _mm512_setzero_ps(), _CMP_NEQ_UQ)
                            : (uint32_t)_mm512_cmp_pd_mask(_mm512_loadu_pd((const double *)(spikes + j)), _mm512_setzero_pd(), _CMP_NEQ_UQ);
        while (mask) {
            list[count++] = j + __builtin_ctz(mask);
            mask &= mask - 1;
        }
    }
#endif
    for (; j < N; j++) {
        list[count] = j;
        count += spikes[j] != 0;
    }
    return count;
}

/*
 * Advance LIF or AdaptiveLIF neurons by one step: lif_step and
 * adaptive_lif_step of ember.neurons.functional.
 */
static __attribute__((optimize("no-trapping-math"))) void
FN(population_step)(const Net *net, const Node *node, int node_index, Scratch *w, const int64_t *slot_now, int64_t step) {
    const int B = net->batch;
    const int N = node->size;
    const REAL *v_rest = (const REAL *)node->v_rest;
    const REAL *v_reset = (const REAL *)node->v_reset;
    const REAL *v_threshold = (const REAL *)node->v_threshold;
    const REAL *resistance = (const REAL *)node->resistance;
    const REAL *decay = (const REAL *)node->decay;
    const int32_t *refractory_steps = node->refractory_steps;
    REAL *theta = (REAL *)node->theta;
    const REAL *theta_plus = (const REAL *)node->theta_plus;
    REAL *current = (REAL *)w->inputs;
    REAL *jump = current + N;
    int32_t *active = w->active + w->active_offset[node_index];
    int32_t *active_count = w->active_count + (size_t)node_index * B;
    const int adapting = node->adaptive && node->adapt;

    /* theta decays before the threshold test: theta * exp(-dt / tau_theta). */
    if (adapting) {
        const REAL *theta_decay = (const REAL *)node->theta_decay;
        const int samples = node->theta_shared ? 1 : B;
        for (int b = 0; b < samples; b++)
            for (int j = 0; j < N; j++) theta[(size_t)b * N + j] = theta[(size_t)b * N + j] * theta_decay[j];
    }

    for (int b = 0; b < B; b++) {
        const int inputs = FN(gather_input)(net, w, node, b, slot_now, step, current, jump);
        const int has_current = inputs & 1, has_jump = inputs >> 1;
        REAL *v = (REAL *)node->v + (size_t)b * N;
        int32_t *refractory = node->refractory + (size_t)b * N;
        REAL *spikes = (REAL *)node->spikes + (size_t)b * N;
        const REAL *sample_theta = NULL;
        int32_t *list = active + (size_t)b * N;
        if (node->adaptive) sample_theta = node->theta_shared ? theta : theta + (size_t)b * N;

        /* One loop for each combination of inputs, so that each one vectorises. */
        const REAL *in_current = has_current ? current : NULL, *in_jump = has_jump ? jump : NULL;
        const FN(LifArrays) a = {v_rest, v_reset, v_threshold, resistance, decay, refractory_steps};
        switch ((in_current != NULL) | (in_jump != NULL) << 1 | (sample_theta != NULL) << 2) {
        case 0: FN(lif_sample)(&a, v, refractory, spikes, NULL, NULL, NULL, N); break;
        case 1: FN(lif_sample)(&a, v, refractory, spikes, in_current, NULL, NULL, N); break;
        case 2: FN(lif_sample)(&a, v, refractory, spikes, NULL, in_jump, NULL, N); break;
        case 3: FN(lif_sample)(&a, v, refractory, spikes, in_current, in_jump, NULL, N); break;
        case 4: FN(lif_sample)(&a, v, refractory, spikes, NULL, NULL, sample_theta, N); break;
        case 5: FN(lif_sample)(&a, v, refractory, spikes, in_current, NULL, sample_theta, N); break;
        case 6: FN(lif_sample)(&a, v, refractory, spikes, NULL, in_jump, sample_theta, N); break;
        default: FN(lif_sample)(&a, v, refractory, spikes, in_current, in_jump, sample_theta, N); break;
        }
        const int32_t count = FN(list_spikes)(spikes, N, list);
        active_count[b] = count;

        /* A per-sample theta rises by theta_plus at each spike. */
        if (adapting && !node->theta_shared) {
            REAL *own = theta + (size_t)b * N;
            for (int k = 0; k < count; k++) own[list[k]] = own[list[k]] + theta_plus[list[k]] * (REAL)1;
        }
    }

    /* A shared theta rises by theta_plus times the fraction of samples that spiked. */
    if (adapting && node->theta_shared) {
        const REAL *spikes = (const REAL *)node->spikes;
        for (int j = 0; j < N; j++) {
            REAL total = 0;
            for (int b = 0; b < B; b++) total = total + spikes[(size_t)b * N + j];
            theta[j] = theta[j] + theta_plus[j] * (total / (REAL)B);
        }
    }
}

/* ---------------------------------------------------------------- sources */

/*
 * PoissonEncoder "bernoulli": spikes where torch.rand < probability, drawn
 * from step_generator(seed, stream, step), for `count` steps from `first`.
 */
static void FN(poisson_draw)(const Net *net, const Node *node, int node_index, Scratch *w, int64_t first, int count) {
    const int64_t units = (int64_t)net->batch * node->size;
    const REAL *probability = (const REAL *)node->probability;
    uint64_t seeds[DRAW_BLOCK];

    for (int k = 0; k < count; k++) seeds[k] = mix_seed3(node->seed, (uint64_t)node->stream, (uint64_t)(first + k));
    twister_seed_many(w->states, seeds, count);
    for (int k = 0; k < count; k++) {
        uint8_t *frame = w->drawn + w->drawn_offset[node_index] + (size_t)k * units;
        twister_outputs(w->states[k], w->outputs, (sizeof(REAL) == sizeof(double) ? 2 : 1) * units);
        for (int64_t idx = 0; idx < units; idx++) frame[idx] = UNIFORM(w->outputs, idx) < probability[idx];
    }
}

/* Set a source's spikes and active lists from a frame of 0/1 bytes (B, size). */
static void FN(frame_step)(const Net *net, const Node *node, int node_index, Scratch *w, const uint8_t *frame) {
    const int B = net->batch;
    const int N = node->size;
    REAL *spikes = (REAL *)node->spikes;
    int32_t *active = w->active + w->active_offset[node_index];
    int32_t *active_count = w->active_count + (size_t)node_index * B;

    for (int b = 0; b < B; b++) {
        REAL *sample = spikes + (size_t)b * N;
        const uint8_t *drawn = frame + (size_t)b * N;
        for (int i = 0; i < N; i++) sample[i] = drawn[i] ? (REAL)1 : (REAL)0;
        active_count[b] = FN(list_spikes)(sample, N, active + (size_t)b * N);
    }
}

/* ------------------------------------------------------------ connections */

static void FN(deferred_pay_spiking)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int64_t step);
static void FN(deferred_emit)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int ci,
                              const int64_t *slot_now, int64_t step);
static void FN(deferred_restart)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int64_t step);

/* Add row[from .. to) into a delay line at its offsets: the whole weight, or with fractional delays the near (share 0) or far share. */
static inline void FN(line_add)(REAL *restrict cells, const int32_t *restrict offset, const REAL *restrict row,
                                const REAL *restrict fraction, int share, int from, int to) {
    if (!fraction) {
        for (int j = from; j < to; j++) cells[offset[j]] += row[j];
    } else if (share == 0) {
        for (int j = from; j < to; j++) cells[offset[j]] += row[j] * ((REAL)1 - fraction[j]);
    } else {
        for (int j = from; j < to; j++) cells[offset[j]] += row[j] * fraction[j];
    }
}

/*
 * Put the spikes of step `step` of connection ci into its ring buffer or
 * delay line: each active presynaptic unit adds its row of weights at its
 * delays (Dense._emit_events and Connection._emit_events). With fractional
 * delays every near share w (1 - f) of a sample goes in before any far share
 * w f, as the two index_add_ calls of the PyTorch path do. Rows whose rule
 * defers potentiation pay what they owe first. The function is noinline,
 * because inlined into the step loop it left too few registers for the
 * column updates of batch STDP, which then ran about 20 % slower.
 */
static __attribute__((noinline)) void FN(emit)(const Net *net, int ci, Scratch *w, const int64_t *slot_now, int64_t step) {
    const Conn *c = &net->conns[ci];
    const int64_t now = slot_now[ci];
    const int B = net->batch;
    const int I = c->pre_size;
    const int P = c->post_size;
    const int slots = c->slots;
    const REAL *weight = (const REAL *)c->weight;
    const REAL *fraction = (const REAL *)c->fraction;
    const int32_t *delay = c->delay;
    const int32_t *active = w->active + w->active_offset[c->pre];
    const int32_t *active_count = w->active_count + (size_t)c->pre * B;
    const int lateral = c->kind == CONN_LATERAL;
    const int prefetch = FN(prefetches)(c);

    /* Rows with deferred potentiation pay it before their weights go out. */
    const int deferring = w->deferred_of_conn[ci];
    if (deferring >= 0) {
        Deferred *d = &w->deferred[deferring];
        if (!c->offset) {
            FN(deferred_emit)(net, &net->rules[deferring], d, w, ci, slot_now, step);
            return;
        }
        FN(deferred_pay_spiking)(net, &net->rules[deferring], d, w, step);
    }

    for (int b = 0; b < B; b++) {
        REAL *ring = (REAL *)c->in_flight + (size_t)b * slots * P;
        const int32_t *list = active + (size_t)b * I;
        const int count = active_count[b];

        if (c->kind == CONN_ONE_TO_ONE) {
            for (int k = 0; k < count; k++) {
                const int i = list[k];
                int64_t slot = now + (delay ? delay[i] : 0);
                if (slot >= slots) slot -= slots;
                ring[(size_t)slot * P + i] += fraction ? weight[i] * ((REAL)1 - fraction[i]) : weight[i];
            }
            if (fraction) {
                for (int k = 0; k < count; k++) {
                    const int i = list[k];
                    int64_t slot = now + delay[i] + 1;
                    if (slot >= slots) slot -= slots;
                    ring[(size_t)slot * P + i] += weight[i] * fraction[i];
                }
            }
            continue;
        }

        if (!c->offset) {
            REAL *target = ring + (size_t)FN(shifted_slot)(c, now) * P;
            for (int k = 0; k < count; k++) {
                const int i = list[k];
                const REAL *row = weight + (size_t)i * P;
                const REAL *next = prefetch && k + 1 < count ? weight + (size_t)list[k + 1] * P : NULL;
                const int skip = lateral ? i : P;
                if (!next) {
                    for (int j = 0; j < skip; j++) target[j] += row[j];
                    for (int j = skip + 1; j < P; j++) target[j] += row[j];
                    continue;
                }
                for (int first = 0; first < P; first += PREFETCH_SPAN) {
                    const int last = first + PREFETCH_SPAN < P ? first + PREFETCH_SPAN : P;
                    FN(prefetch_read)(next, sizeof(REAL) * (size_t)first, sizeof(REAL) * (size_t)last);
                    int cut, resume;
                    FN(split_span)(first, last, skip, &cut, &resume);
                    for (int j = first; j < cut; j++) target[j] += row[j];
                    for (int j = resume; j < last; j++) target[j] += row[j];
                }
            }
            continue;
        }

        /*
         * A delay line: the cell of delay d lies d * P after the current one.
         * Columns go in tiles of LINE_TILE, so that the cells a tile writes
         * stay in the first-level cache. Each weight's sum keeps the order of
         * the rows.
         */
        REAL *target = FN(cell)(net, w, ci, b, slot_now);
        for (int share = 0; share < (fraction ? 2 : 1); share++) {
            REAL *cells = target + (share ? P : 0);
            for (int first = 0; first < P; first += LINE_TILE) {
                const int last = first + LINE_TILE < P ? first + LINE_TILE : P;
                for (int k = 0; k < count; k++) {
                    const int i = list[k];
                    const size_t at = (size_t)i * P;
                    /* A lateral connection skips the weight from a neuron to itself. */
                    const int skip = lateral && i >= first && i < last ? i : last;
                    FN(line_add)(cells, c->offset + at, weight + at, fraction ? fraction + at : NULL, share, first, skip);
                    if (skip < last)
                        FN(line_add)(cells, c->offset + at, weight + at, fraction ? fraction + at : NULL, share, skip + 1, last);
                }
            }
        }
    }
    if (deferring >= 0 && c->offset) FN(deferred_restart)(net, &net->rules[deferring], &w->deferred[deferring], w, step);
}

/* ------------------------------------------------------------------ rules */

/* The constants of one weight update, in REAL, held in registers through the loops. */
typedef struct {
    REAL factor, batch, bound_min, bound_max, w_min, w_max;
    /* The same bounds with an absent one as -inf or +inf, for the branch-free loops. */
    REAL low_bound, high_bound, low_w, high_w;
    int mean, bounds, has_bound_min, has_bound_max, has_w_min, has_w_max;
    int hard; /* hard bounds with at least one bound: delta becomes clamp(w + delta) - w */
    int outside; /* an updated weight ended outside the rule's bounds */
} FN(Update);

static FN(Update) FN(update_constants)(const Rule *r, double factor, int batch) {
    FN(Update) u;
    u.factor = (REAL)factor;
    u.batch = (REAL)batch;
    u.bound_min = (REAL)r->bound_min;
    u.bound_max = (REAL)r->bound_max;
    u.w_min = (REAL)r->w_min;
    u.w_max = (REAL)r->w_max;
    u.mean = r->mean;
    u.bounds = r->bounds;
    u.has_bound_min = r->has_bound_min;
    u.has_bound_max = r->has_bound_max;
    u.has_w_min = r->has_w_min;
    u.has_w_max = r->has_w_max;
    u.hard = r->bounds == BOUNDS_HARD && (r->has_bound_min || r->has_bound_max);
    /* x < -inf and x > +inf are false for every x, NaN included, so an infinite bound clamps nothing. */
    const int checked = r->bounds != BOUNDS_NONE;
    u.low_bound = checked && r->has_bound_min ? u.bound_min : (REAL)-INFINITY;
    u.high_bound = checked && r->has_bound_max ? u.bound_max : (REAL)INFINITY;
    u.low_w = r->has_w_min ? u.w_min : (REAL)-INFINITY;
    u.high_w = r->has_w_max ? u.w_max : (REAL)INFINITY;
    u.outside = 0;
    return u;
}

/*
 * Apply one weight update from its pair sum: the batch reduction of
 * Connection.outer, the factor of stdp.scaled, Bounds.limit, then
 * Connection.apply_update (add, clamp to w_min and w_max).
 */
static inline void FN(update_weight)(FN(Update) *u, REAL *target, REAL total) {
    REAL weight = *target;
    REAL delta = u->mean ? total / u->batch : total;
    delta = delta * u->factor;
    if (u->bounds == BOUNDS_HARD && (u->has_bound_min || u->has_bound_max)) {
        delta = FN(clamp)(weight + delta, u->has_bound_min, u->bound_min, u->has_bound_max, u->bound_max) - weight;
    } else if (u->bounds == BOUNDS_SOFT) {
        REAL headroom = u->bound_max - weight;
        REAL footroom = weight - u->bound_min;
        if (headroom < 0) headroom = 0;
        if (footroom < 0) footroom = 0;
        delta = delta > 0 ? delta * headroom : delta * footroom;
        delta = FN(clamp)(weight + delta, 1, u->bound_min, 1, u->bound_max) - weight;
    }
    weight = FN(clamp)(weight + delta, u->has_w_min, u->w_min, u->has_w_max, u->w_max);
    *target = weight;

    /* w + (clamp(w + delta) - w) can round to just outside the rule's bounds. The
     * PyTorch path then moves that weight at its next update, whatever its row
     * and column, so the next update here must go over every weight. */
    if (u->bounds != BOUNDS_NONE &&
        ((u->has_bound_min && weight < u->bound_min) || (u->has_bound_max && weight > u->bound_max)))
        u->outside = 1;
}

/*
 * update_weight for hard bounds or none (not soft bounds), without branches
 * so that the compiler can vectorise the loops that call it. An absent
 * bound is an infinite one, which clamps nothing. Returns the new weight;
 * `outside` gets 1 when it lies outside the rule's bounds.
 */
static inline REAL FN(update_plain)(const FN(Update) *u, int mean, int hard, REAL weight, REAL total, int *outside) {
    REAL delta = mean ? total / u->batch : total;
    delta = delta * u->factor;
    if (hard) {
        REAL moved = weight + delta;
        moved = moved < u->low_bound ? u->low_bound : moved;
        moved = moved > u->high_bound ? u->high_bound : moved;
        delta = moved - weight;
    }
    REAL updated = weight + delta;
    updated = updated < u->low_w ? u->low_w : updated;
    updated = updated > u->high_w ? u->high_w : updated;
    *outside |= (updated < u->low_bound) | (updated > u->high_bound);
    return updated;
}

/* Apply the updates of totals[0 .. n) to row[0 .. n): update_weight over a contiguous run. */
static void FN(update_run)(FN(Update) *u, REAL *row, const REAL *totals, int n) {
    int outside = 0;
    if (u->bounds == BOUNDS_SOFT) {
        for (int j = 0; j < n; j++) FN(update_weight)(u, row + j, totals[j]);
        return;
    }
    /* One loop per (mean, hard) pair, so that each one vectorises without tests inside. */
    if (u->mean && u->hard) {
        for (int j = 0; j < n; j++) row[j] = FN(update_plain)(u, 1, 1, row[j], totals[j], &outside);
    } else if (u->mean) {
        for (int j = 0; j < n; j++) row[j] = FN(update_plain)(u, 1, 0, row[j], totals[j], &outside);
    } else if (u->hard) {
        for (int j = 0; j < n; j++) row[j] = FN(update_plain)(u, 0, 1, row[j], totals[j], &outside);
    } else {
        for (int j = 0; j < n; j++) row[j] = FN(update_plain)(u, 0, 0, row[j], totals[j], &outside);
    }
    u->outside |= outside;
}

/*
 * Depression at presynaptic spikes: for each row i with a spike in some
 * sample, the pair sum over those samples (in sample order) of the decayed
 * postsynaptic trace, then the update of the whole row. A full pass updates
 * every row, as the PyTorch path does, to bring weights into bounds.
 */
static void FN(depress)(const Net *net, Rule *r, Scratch *w) {
    const Conn *c = &net->conns[r->conn];
    const int B = net->batch;
    const int I = c->pre_size;
    const int P = c->post_size;
    const REAL *pre_spikes = (const REAL *)net->nodes[c->pre].spikes;
    const REAL *trace = (const REAL *)r->post_trace1;
    const int32_t *active = w->active + w->active_offset[c->pre];
    const int32_t *active_count = w->active_count + (size_t)c->pre * B;
    const int lateral = c->kind == CONN_LATERAL;
    REAL *weight = (REAL *)c->weight;
    REAL *sums = (REAL *)w->sums;
    FN(Update) u = FN(update_constants)(r, r->depression_factor, B);
    int n_rows = 0;

    if (r->full_pass) {
        for (int i = 0; i < I; i++) w->rows[n_rows++] = i;
    } else {
        for (int b = 0; b < B; b++) {
            const int32_t *list = active + (size_t)b * I;
            for (int k = 0; k < active_count[b]; k++) {
                if (!w->row_mark[list[k]]) {
                    w->row_mark[list[k]] = 1;
                    w->rows[n_rows++] = list[k];
                }
            }
        }
        for (int k = 0; k < n_rows; k++) w->row_mark[w->rows[k]] = 0;
    }

    for (int k = 0; k < n_rows; k++) {
        const int i = w->rows[k];
        REAL *row = weight + (size_t)i * P;
        for (int j = 0; j < P; j++) sums[j] = 0;
        for (int b = 0; b < B; b++) {
            if (pre_spikes[(size_t)b * I + i] == 0) continue;
            const REAL *sample_trace = trace + (size_t)b * P;
            for (int j = 0; j < P; j++) sums[j] += sample_trace[j];
        }
        if (lateral) {
            FN(update_run)(&u, row, sums, i);
            FN(update_run)(&u, row + i + 1, sums + i + 1, P - i - 1);
        } else {
            FN(update_run)(&u, row, sums, P);
        }
    }
    r->full_pass = u.outside;
}

/*
 * Potentiation at postsynaptic spikes: for each spiking column j, the pair
 * sum over samples of x_pre[b, i] * post[b, j] (post is the spike, or for
 * Diehl & Cook the spike times x_post2), for every row i.
 */
static void FN(potentiate)(const Net *net, Rule *r, Scratch *w) {
    const Conn *c = &net->conns[r->conn];
    const int B = net->batch;
    const int I = c->pre_size;
    const int P = c->post_size;
    const REAL *post_spikes = (const REAL *)net->nodes[c->post].spikes;
    const REAL *gate = r->kind == RULE_DIEHL_COOK ? (const REAL *)r->post_trace2 : NULL;
    const REAL *pre_trace = (const REAL *)r->pre_trace;
    const int32_t *active = w->active + w->active_offset[c->post];
    const int32_t *active_count = w->active_count + (size_t)c->post * B;
    const int lateral = c->kind == CONN_LATERAL;
    REAL *weight = (REAL *)c->weight;
    REAL *sums = (REAL *)w->sums;
    FN(Update) u = FN(update_constants)(r, r->potentiation_factor, B);
    int n_columns = 0;

    if (r->full_pass) {
        for (int j = 0; j < P; j++) w->columns[n_columns++] = j;
    } else if (B == 1) {
        /* The spike list is in ascending order already. */
        for (int k = 0; k < active_count[0]; k++) w->columns[n_columns++] = active[k];
    } else {
        for (int b = 0; b < B; b++) {
            const int32_t *list = active + (size_t)b * P;
            for (int k = 0; k < active_count[b]; k++) w->column_mark[list[k]] = 1;
        }
        /* In ascending order, so that a block of columns covers few cache lines of each row. */
        for (int j = 0; j < P; j++) {
            if (w->column_mark[j]) {
                w->column_mark[j] = 0;
                w->columns[n_columns++] = j;
            }
        }
    }

    if (B == 1 && u.bounds != BOUNDS_SOFT) {
        /* With one sample the pair sum of weight (i, j) is 0 + x_pre[i] * post[j], so no scratch sums are needed. */
        REAL *post = sums;
        int32_t *columns = w->columns;
        for (int m = 0; m < n_columns; m++) {
            const int j = columns[m];
            post[m] = gate ? post_spikes[j] * gate[j] : post_spikes[j];
        }
        int outside = 0;
        for (int i = 0; i < I; i++) {
            REAL *row = weight + (size_t)i * P;
            const REAL x = pre_trace[i];
            if (lateral) {
                for (int m = 0; m < n_columns; m++) {
                    const int j = columns[m];
                    if (j == i) continue;
                    const REAL total = post[m] == 0 ? (REAL)0 : (REAL)0 + x * post[m];
                    row[j] = FN(update_plain)(&u, u.mean, u.hard, row[j], total, &outside);
                }
            } else if (u.hard) {
                for (int m = 0; m < n_columns; m++) {
                    const int j = columns[m];
                    const REAL total = post[m] == 0 ? (REAL)0 : (REAL)0 + x * post[m];
                    row[j] = FN(update_plain)(&u, u.mean, 1, row[j], total, &outside);
                }
            } else {
                for (int m = 0; m < n_columns; m++) {
                    const int j = columns[m];
                    const REAL total = post[m] == 0 ? (REAL)0 : (REAL)0 + x * post[m];
                    row[j] = FN(update_plain)(&u, u.mean, 0, row[j], total, &outside);
                }
            }
        }
        r->full_pass = outside;
        return;
    }

    /*
     * Several samples, a weight matrix that fits in the cache: columns go in
     * blocks of 64, whose pair sums over the samples are vectors along the
     * rows, and each block then updates its columns row by row.
     */
    if ((size_t)I * (size_t)P * sizeof(REAL) <= CACHED_WEIGHT_BYTES) {
        for (int first = 0; first < n_columns; first += 64) {
            const int block = n_columns - first < 64 ? n_columns - first : 64;
            for (size_t x = 0; x < (size_t)block * I; x++) sums[x] = 0;
            for (int b = 0; b < B; b++) {
                const REAL *sample_trace = pre_trace + (size_t)b * I;
                for (int m = 0; m < block; m++) {
                    const size_t idx = (size_t)b * P + w->columns[first + m];
                    const REAL post = gate ? post_spikes[idx] * gate[idx] : post_spikes[idx];
                    if (post == 0) continue;
                    REAL *column_sums = sums + (size_t)m * I;
                    for (int i = 0; i < I; i++) column_sums[i] += sample_trace[i] * post;
                }
            }
            for (int i = 0; i < I; i++) {
                REAL *row = weight + (size_t)i * P;
                for (int m = 0; m < block; m++) {
                    const int j = w->columns[first + m];
                    if (lateral && j == i) continue;
                    FN(update_weight)(&u, row + j, sums[(size_t)m * I + i]);
                }
            }
        }
        r->full_pass = u.outside;
        return;
    }

    /*
     * Several samples, a larger matrix: row by row, the pair sums of the row's spiking columns
     * collect x_pre[b, i] * post[b, j] in sample order (the order of the
     * PyTorch sum over the batch), then the row takes its updates. Each row
     * is read and written once, however many columns spiked.
     */
    int32_t *list = w->post_list;
    REAL *value = (REAL *)w->post_value;
    int32_t *first = w->post_first;
    int total = 0;
    for (int b = 0; b < B; b++) {
        first[b] = total;
        const int32_t *spiking = active + (size_t)b * P;
        for (int k = 0; k < active_count[b]; k++) {
            const size_t idx = (size_t)b * P + spiking[k];
            const REAL post = gate ? post_spikes[idx] * gate[idx] : post_spikes[idx];
            if (post == 0) continue;
            list[total] = spiking[k];
            value[total++] = post;
        }
    }
    first[B] = total;
    for (int i = 0; i < I; i++) {
        REAL *row = weight + (size_t)i * P;
        for (int m = 0; m < n_columns; m++) sums[w->columns[m]] = 0;
        for (int b = 0; b < B; b++) {
            const REAL x = pre_trace[(size_t)b * I + i];
            if (x == 0) continue; /* adds +0 to sums that start at +0 */
            for (int k = first[b]; k < first[b + 1]; k++) sums[list[k]] += x * value[k];
        }
        for (int m = 0; m < n_columns; m++) {
            const int j = w->columns[m];
            if (lateral && j == i) continue;
            FN(update_weight)(&u, row + j, sums[j]);
        }
    }
    r->full_pass = u.outside;
}


/*
 * Deferred potentiation. Pair STDP with one sample potentiates, at each
 * postsynaptic spike of neuron j, every weight of column j by a_plus times
 * the presynaptic trace x_i. Done at once, that touches one cache line per
 * row. Between two spikes of input i its trace only decays, x_i(t) =
 * x_i(s) decay^(t - s), so what row i owes since step s, in column j, is
 * a_plus x_i(s) times the sum of decay^(t - s) over the spikes of neuron j
 * at steps t >= s.
 *
 * Steps count from the call's first step in spans of `span` steps. For the
 * span that starts at step b, S_j sums decay^(t - b) over the spikes of j
 * at steps t >= b, so the sum since a step s of that span is
 * decay^-(s - b) (S_j now - S_j at step s). A row takes off the second term
 * when it starts owing at step s (a spike of input i), in the pass that
 * sends and depresses it. It adds the first term when it pays: at its next
 * spike, before its weights go out, when its span leaves the ring of kept
 * spans, and at the end of the call. In between, the stored row is not the
 * weight, but nothing reads it: a row goes out only after it paid. A sum is
 * scaled by at most decay^-(span - 1), which kernels.c bounds, so the sums
 * can be in REAL.
 *
 * Additions of a non-negative amount followed by a clamp add up to the sum
 * followed by one clamp, so the weights equal those of the step-by-step
 * update up to rounding. Used only for pair STDP with one sample, no Bounds,
 * a non-negative a_plus and all weights in bounds (plan.py decides).
 */

/* The sums of the span that contains `position` (steps from the call's start). */
static inline REAL *FN(span_sums)(const Deferred *d, int P, int64_t position) {
    return (REAL *)d->sums + (size_t)((position / d->span) % d->spans) * (size_t)P;
}

/* Return the factor of row i's sums: its trace at its anchor, times decay^-(anchor - start of its span). */
static inline REAL FN(anchor_scale)(const Deferred *d, int i) {
    return (REAL)(d->value[i] * d->growth[d->anchor[i] % d->span]);
}

/* The arrays and constants of one pass along a row (see row_pass). */
typedef struct {
    REAL *row, *target;
    const REAL *owed, *fresh, *trace;
    REAL owed_scale, fresh_scale, decay;
    FN(Update) up, ud;
} FN(RowPass);

/*
 * Columns [from, to) of one row, with the steps that `actions` names. Pay
 * what the row owes (owed_scale * owed[j]), send the weight to target, and
 * depress it by the postsynaptic trace as rule_step will have decayed it
 * (trace * decay). Then take off what the row will pay for the span's sums
 * so far at its new anchor (fresh_scale * fresh[j]). Inlined with a constant
 * `actions`, each combination is a loop without tests.
 */
static inline __attribute__((always_inline)) void FN(pass_columns)(const FN(RowPass) *p, int actions, int from, int to) {
    REAL *restrict row = p->row;
    REAL *restrict target = p->target;
    const REAL *restrict owed = p->owed;
    const REAL *restrict fresh = p->fresh;
    const REAL *restrict trace = p->trace;
    const REAL owed_scale = p->owed_scale, fresh_scale = p->fresh_scale, decay = p->decay;
    int outside = 0; /* the rule has no Bounds, so no weight can end outside them */
    for (int j = from; j < to; j++) {
        REAL weight = row[j];
        if (actions & PASS_PAY) weight = FN(update_plain)(&p->up, 0, 0, weight, owed_scale * owed[j], &outside);
        if (actions & PASS_SEND) target[j] += weight;
        if (actions & PASS_DEPRESS) weight = FN(update_plain)(&p->ud, 0, 0, weight, trace[j] * decay, &outside);
        if (actions & PASS_ANCHOR) weight -= fresh_scale * fresh[j] * p->up.factor;
        row[j] = weight;
    }
}

#define ROW_PASS_CASE(actions) \
    case actions: FN(pass_columns)(p, actions, from, to); break;

/* One pass along the columns [from, to) of a row, skipping column `skip` (a lateral connection's own neuron). */
static void FN(row_pass)(const FN(RowPass) *p, int actions, int first, int last, int skip) {
    int cut, resume;
    FN(split_span)(first, last, skip, &cut, &resume);
    for (int part = 0; part < 2; part++) {
        const int from = part ? resume : first, to = part ? last : cut;
        switch (actions) {
            ROW_PASS_CASE(1) ROW_PASS_CASE(2) ROW_PASS_CASE(3) ROW_PASS_CASE(4) ROW_PASS_CASE(5)
            ROW_PASS_CASE(6) ROW_PASS_CASE(7) ROW_PASS_CASE(8) ROW_PASS_CASE(9) ROW_PASS_CASE(10)
            ROW_PASS_CASE(11) ROW_PASS_CASE(12) ROW_PASS_CASE(13) ROW_PASS_CASE(14) ROW_PASS_CASE(15)
            default: break;
        }
    }
}

#undef ROW_PASS_CASE

/* Return the part of a row pass that all rows of a rule share: its updates and postsynaptic trace. */
static FN(RowPass) FN(rule_pass)(const Rule *r) {
    FN(RowPass) p;
    memset(&p, 0, sizeof(p));
    p.trace = (const REAL *)r->post_trace1;
    p.decay = (REAL)r->decay_post1;
    p.up = FN(update_constants)(r, r->potentiation_factor, 1);
    p.ud = FN(update_constants)(r, r->depression_factor, 1);
    return p;
}

/* Set the PASS_PAY part of a pass over row i, what it owes since its anchor. Returns PASS_PAY, or 0 when it owes nothing. */
static int FN(owed_by)(const Deferred *d, FN(RowPass) *p, int P, int i, int64_t position) {
    if (d->value[i] == 0.0 || d->anchor[i] == position) return 0;
    p->owed = FN(span_sums)(d, P, d->anchor[i]);
    p->owed_scale = FN(anchor_scale)(d, i);
    return PASS_PAY;
}

/*
 * Anchor row i at `position` with presynaptic trace `value`, for a pass that
 * follows: returns PASS_ANCHOR and sets what the pass takes off, or 0 when
 * the span's sums are still zero.
 */
static int FN(anchor_at)(Deferred *d, FN(RowPass) *p, int P, int i, int64_t position, double value) {
    d->anchor[i] = position;
    d->value[i] = value;
    if (d->fresh || value == 0.0) return 0;
    p->fresh = FN(span_sums)(d, P, position);
    p->fresh_scale = FN(anchor_scale)(d, i);
    return PASS_ANCHOR;
}

/* The presynaptic trace of input i after its spike at this step, as rule_step will compute it. */
static inline double FN(trace_after_spike)(const Rule *r, int i) {
    const REAL decayed = ((const REAL *)r->pre_trace)[i] * (REAL)r->decay_pre;
    return (double)(r->nearest ? (REAL)1 : decayed + (REAL)1);
}

/* Pay what row i owes up to `position`, in one pass. The row keeps its anchor. */
static void FN(deferred_pay_row)(const Net *net, const Rule *r, Deferred *d, const FN(RowPass) *rule_pass, int i,
                                 int64_t position) {
    const Conn *c = &net->conns[r->conn];
    FN(RowPass) p = *rule_pass;
    p.row = (REAL *)c->weight + (size_t)i * c->post_size;
    if (FN(owed_by)(d, &p, c->post_size, i, position))
        FN(row_pass)(&p, PASS_PAY, 0, c->post_size, c->kind == CONN_LATERAL ? i : c->post_size);
}

/* Before emit sends the rows of a connection with delays, each spiking row pays what it owes. */
static void FN(deferred_pay_spiking)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int64_t step) {
    const Conn *c = &net->conns[r->conn];
    const int32_t *list = w->active + w->active_offset[c->pre];
    const FN(RowPass) rule_pass = FN(rule_pass)(r);
    for (int k = 0; k < w->active_count[c->pre]; k++) FN(deferred_pay_row)(net, r, d, &rule_pass, list[k], step - d->base);
}

/*
 * emit for a connection without delays whose rule defers potentiation, with
 * one sample: one pass along each spiking row pays what the row owes, sends
 * the weights out, applies this step's depression (which rule_step then
 * skips), and anchors the row at this step.
 */
static void FN(deferred_emit)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int ci,
                              const int64_t *slot_now, int64_t step) {
    const Conn *c = &net->conns[ci];
    const int P = c->post_size;
    const int32_t *list = w->active + w->active_offset[c->pre];
    const int count = w->active_count[c->pre];
    REAL *target = (REAL *)c->in_flight + (size_t)FN(shifted_slot)(c, slot_now[ci]) * P;
    const int64_t position = step - d->base;
    const int prefetch = FN(prefetches)(c);
    const FN(RowPass) rule_pass = FN(rule_pass)(r);

    for (int k = 0; k < count; k++) {
        const int i = list[k];
        FN(RowPass) p = rule_pass;
        p.row = (REAL *)c->weight + (size_t)i * P;
        p.target = target;
        int actions = PASS_SEND | (r->depress ? PASS_DEPRESS : 0) | FN(owed_by)(d, &p, P, i, position);
        actions |= FN(anchor_at)(d, &p, P, i, position, FN(trace_after_spike)(r, i));
        const int skip = c->kind == CONN_LATERAL ? i : P;
        /* The next row is requested a span ahead of this row's pass. Without prefetching the row is one span. */
        const REAL *next = prefetch && k + 1 < count ? (const REAL *)c->weight + (size_t)list[k + 1] * P : NULL;
        const int span = next ? DEFERRED_PREFETCH_SPAN : P;
        for (int first = 0; first < P; first += span) {
            const int last = first + span < P ? first + span : P;
            if (next) FN(prefetch_write)(next, sizeof(REAL) * (size_t)first, sizeof(REAL) * (size_t)last);
            FN(row_pass)(&p, actions, first, last, skip);
        }
    }
    d->depressed = step;
}

/*
 * After emit sent the rows of a connection with delays (which paid first):
 * one pass along each spiking row applies this step's depression and
 * anchors the row at this step.
 */
static void FN(deferred_restart)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int64_t step) {
    const Conn *c = &net->conns[r->conn];
    const int P = c->post_size;
    const int32_t *list = w->active + w->active_offset[c->pre];
    const int count = w->active_count[c->pre];
    const int64_t position = step - d->base;
    const FN(RowPass) rule_pass = FN(rule_pass)(r);
    for (int k = 0; k < count; k++) {
        const int i = list[k];
        FN(RowPass) p = rule_pass;
        p.row = (REAL *)c->weight + (size_t)i * P;
        int actions = r->depress ? PASS_DEPRESS : 0;
        actions |= FN(anchor_at)(d, &p, P, i, position, FN(trace_after_spike)(r, i));
        if (actions) FN(row_pass)(&p, actions, 0, P, c->kind == CONN_LATERAL ? i : P);
    }
    d->depressed = step;
}

/* Start deferring at the call's first step `base`. Nothing is owed, and each row's trace is the one it has after decaying at `base`. */
static void FN(deferred_rebase)(const Net *net, const Rule *r, Deferred *d, int64_t base) {
    const Conn *c = &net->conns[r->conn];
    const REAL *trace = (const REAL *)r->pre_trace;
    const REAL decay = (REAL)r->decay_pre;
    d->base = base;
    d->fresh = 1;
    memset(d->sums, 0, sizeof(REAL) * (size_t)d->spans * (size_t)c->post_size);
    for (int i = 0; i < c->pre_size; i++) {
        d->anchor[i] = 0;
        d->value[i] = (double)(trace[i] * decay);
    }
}

/* Every row pays what it owes, at the end of the call. */
static void FN(deferred_sync_all)(const Net *net, const Rule *r, Deferred *d, int64_t now) {
    const FN(RowPass) rule_pass = FN(rule_pass)(r);
    for (int i = 0; i < net->conns[r->conn].pre_size; i++) FN(deferred_pay_row)(net, r, d, &rule_pass, i, now - d->base);
}

/*
 * A span starts at `start` (steps from the call's start): the rows anchored
 * in the span that leaves the ring pay and are anchored at `start`, whose
 * sums start at zero.
 */
static void FN(deferred_turn)(const Net *net, const Rule *r, Deferred *d, int64_t start) {
    const Conn *c = &net->conns[r->conn];
    const int64_t leaving = start / d->span - d->spans;
    if (leaving >= 0) {
        const FN(RowPass) rule_pass = FN(rule_pass)(r);
        const int64_t end = (leaving + 1) * d->span;
        for (int i = 0; i < c->pre_size; i++) {
            if (d->anchor[i] >= end) continue;
            FN(deferred_pay_row)(net, r, d, &rule_pass, i, start);
            d->value[i] *= d->power[start - d->anchor[i]];
            d->anchor[i] = start;
        }
    }
    memset(FN(span_sums)(d, c->post_size, start), 0, sizeof(REAL) * (size_t)c->post_size);
    d->fresh = 1;
}

/*
 * The part of rule_step that changes with deferred potentiation, after emit
 * anchored the spiking rows: every kept span takes in this step's
 * postsynaptic spikes, and at the end of a span the next one starts.
 */
static void FN(deferred_step)(const Net *net, const Rule *r, Deferred *d, const Scratch *w, int64_t step) {
    const Conn *c = &net->conns[r->conn];
    const int P = c->post_size;
    const int64_t position = step - d->base;
    const int32_t *post = w->active + w->active_offset[c->post];
    const int post_count = w->active_count[c->post];
    const int64_t current = position / d->span;
    const int64_t oldest = current - d->spans + 1 > 0 ? current - d->spans + 1 : 0;

    for (int64_t q = oldest; q <= current && post_count; q++) {
        REAL *sums = FN(span_sums)(d, P, q * d->span);
        const REAL add = (REAL)d->power[position - q * d->span];
        for (int k = 0; k < post_count; k++) sums[post[k]] += add;
    }
    if (post_count) d->fresh = 0;
    if ((position + 1) % d->span == 0) FN(deferred_turn)(net, r, d, position + 1);
}

/* The power table of a nearest trace: 1, decay, decay * decay, ... up to its fixed point (0, or a subnormal that decay leaves as it is). */
static int FN(arrival_powers)(Arrivals *a, REAL decay) {
    REAL *power = (REAL *)malloc(sizeof(REAL) * ARRIVAL_MAX_POWERS);
    if (!power) return -1;
    power[0] = 1;
    int size = 1;
    while (size < ARRIVAL_MAX_POWERS) {
        power[size] = power[size - 1] * decay;
        if (power[size] == power[size - 1]) break;
        size++;
        if (power[size - 1] == 0) break;
    }
    a->power = power;
    a->size = size;
    /* Without a fixed point within the table the trace cannot be looked up. */
    return size < ARRIVAL_MAX_POWERS ? 0 : -1;
}

/* The trace `age` steps after an arrival. */
static inline REAL FN(arrival_trace)(const Arrivals *a, int64_t age) {
    const REAL *power = (const REAL *)a->power;
    return power[age < a->size ? age : a->size - 1];
}

/*
 * Start keeping a nearest trace as arrival steps, counted from the first
 * step of the call. Each trace must be 0 or a value of the power table,
 * which it is when it was reset to 0 and then updated only by this rule.
 * Otherwise, or without memory, the call decays every trace at every step.
 */
static void FN(arrivals_open)(const Net *net, const Rule *r, Arrivals *a) {
    const Conn *c = &net->conns[r->conn];
    const size_t n = (size_t)c->pre_size * (size_t)c->post_size;
    const size_t B = (size_t)net->batch;
    const REAL *trace = (const REAL *)r->pre_trace;
    memset(a, 0, sizeof(*a));
    if (!r->arrival || !r->nearest || !r->bucket_start) return;
    if (B > 1 && (net->steps < ARRIVAL_BATCH_MIN_STEPS || B * n * sizeof(int32_t) > ARRIVAL_BATCH_MAX_BYTES)) return;
    if (FN(arrival_powers)(a, (REAL)r->decay_pre) != 0) {
        arrivals_close(a);
        return;
    }
    a->last = (int32_t *)malloc(sizeof(int32_t) * B * n);
    if (!a->last) {
        arrivals_close(a);
        return;
    }
    if (B > 1) {
        a->depression = calloc(n, sizeof(REAL));
        a->potentiation = calloc(n, sizeof(REAL));
        a->spiked = (uint8_t *)calloc((size_t)c->post_size, 1);
        a->spiked_list = (int32_t *)malloc(sizeof(int32_t) * (size_t)c->post_size);
        if (!a->depression || !a->potentiation || !a->spiked || !a->spiked_list) {
            arrivals_close(a);
            return;
        }
    }
    const REAL *power = (const REAL *)a->power;
    const int I = c->pre_size, P = c->post_size;

    for (size_t x = 0; x < B * n; x++) {
        const REAL value = trace[x];
        /* `last` is stored by column, (batch, post, pre), so that a postsynaptic spike reads its column in one run. */
        const size_t sample = x / n, synapse = x % n;
        int32_t *last = a->last + sample * n + (synapse % (size_t)P) * (size_t)I + synapse / (size_t)P;
        if (value == 0) {
            *last = ARRIVAL_NEVER;
            continue;
        }
        /* The power table decreases: find the age whose power equals the trace (step -1 is the step before the call). */
        int low = 0, high = a->size - 1;
        while (low < high) {
            const int middle = (low + high) / 2;
            if (power[middle] > value) low = middle + 1;
            else high = middle;
        }
        if (power[low] != value) {
            arrivals_close(a);
            return;
        }
        *last = -1 - low;
    }
    a->active = 1;
}

/* Write each synapse's trace after step `last` (counted from the first step of the call) back into pre_trace. */
static void FN(arrivals_close_trace)(const Net *net, const Rule *r, Arrivals *a, int64_t last) {
    const Conn *c = &net->conns[r->conn];
    const int I = c->pre_size, P = c->post_size;
    const size_t n = (size_t)I * (size_t)P;
    for (int b = 0; b < net->batch; b++) {
        REAL *trace = (REAL *)r->pre_trace + (size_t)b * n;
        for (int j = 0; j < P; j++) {
            const int32_t *column = a->last + (size_t)b * n + (size_t)j * I;
            for (int i = 0; i < I; i++)
                trace[(size_t)i * P + j] = column[i] == ARRIVAL_NEVER ? (REAL)0 : FN(arrival_trace)(a, last - column[i]);
        }
    }
}

/*
 * arrival_rule_step with a nearest trace kept as arrival steps, while every
 * weight is in bounds. Arrivals come from the rows' columns grouped by delay,
 * so the step touches only the synapses that receive a spike and the columns
 * of neurons that spike. Skipping a synapse whose update is 0 leaves its weight
 * as the PyTorch path does while the weight is in bounds.
 */
static void FN(arrival_lazy_step)(const Net *net, Rule *r, Arrivals *a, int depress, int potentiate, int64_t now,
                                  const REAL *post_trace, const REAL *post_spikes, const int32_t *post_list, int post_events) {
    const Conn *c = &net->conns[r->conn];
    const int I = c->pre_size, P = c->post_size;
    const int lateral = c->kind == CONN_LATERAL;
    const int stride = r->max_delay + 2;
    const uint64_t window = r->max_delay >= 63 ? ~(uint64_t)0 : (((uint64_t)1 << (r->max_delay + 1)) - 1);
    REAL *weight = (REAL *)c->weight;
    FN(Update) ud = FN(update_constants)(r, r->depression_factor, 1);
    FN(Update) up = FN(update_constants)(r, r->potentiation_factor, 1);
    int outside = 0;

    for (int i = 0; i < I; i++) {
        uint64_t due = r->bits[i] & window;
        const int32_t *start = r->bucket_start + (size_t)i * stride;
        const int32_t *column = r->bucket_column + (size_t)i * P;
        REAL *row = weight + (size_t)i * P;
        while (due) {
            const int delay = __builtin_ctzll(due);
            due &= due - 1;
            for (int m = start[delay]; m < start[delay + 1]; m++) {
                const int j = column[m];
                a->last[(size_t)j * I + i] = (int32_t)now;
                if (depress && !(lateral && j == i))
                    row[j] = FN(update_plain)(&ud, ud.mean, ud.hard, row[j], post_trace[j], &outside);
            }
        }
    }
    if (potentiate) {
        for (int k = 0; k < post_events; k++) {
            const int j = post_list[k];
            const int32_t *last = a->last + (size_t)j * I;
            for (int i = 0; i < I; i++) {
                const int32_t arrived = last[i];
                if (arrived == ARRIVAL_NEVER || (lateral && i == j)) continue;
                REAL *target = weight + (size_t)i * P + j;
                *target = FN(update_plain)(&up, up.mean, up.hard, *target, FN(arrival_trace)(a, now - arrived) * post_spikes[j], &outside);
            }
        }
    }
    if (depress || potentiate) r->full_pass = outside;
}

/*
 * arrival_lazy_step with several samples. The pair sums of arrival_batch_step
 * add each sample's terms in sample order, so this step collects them the
 * same way: first every sample's arrivals (depression, by row), then every
 * sample's postsynaptic spikes (potentiation, by column). A weight then takes
 * its depression and then its potentiation, as in the dense pass, and the sums
 * go back to 0. Terms that the dense pass adds as 0 are left out, which
 * changes no sum.
 */
static void FN(arrival_lazy_batch_step)(const Net *net, Rule *r, Arrivals *a, int depress, int potentiate, int64_t now,
                                        const REAL *post_trace, const REAL *post_spikes, const int32_t *post_list,
                                        const int32_t *post_count) {
    const Conn *c = &net->conns[r->conn];
    const int B = net->batch, I = c->pre_size, P = c->post_size;
    const size_t n = (size_t)I * (size_t)P;
    const int lateral = c->kind == CONN_LATERAL;
    const int stride = r->max_delay + 2;
    const uint64_t window = r->max_delay >= 63 ? ~(uint64_t)0 : (((uint64_t)1 << (r->max_delay + 1)) - 1);
    REAL *weight = (REAL *)c->weight;
    REAL *depression = (REAL *)a->depression, *potentiation = (REAL *)a->potentiation;
    FN(Update) ud = FN(update_constants)(r, r->depression_factor, B);
    FN(Update) up = FN(update_constants)(r, r->potentiation_factor, B);
    int outside = 0, spiked_columns = 0;

    for (int b = 0; b < B; b++) {
        int32_t *last = a->last + (size_t)b * n;
        const REAL *sample_trace = post_trace + (size_t)b * P;
        for (int i = 0; i < I; i++) {
            uint64_t due = r->bits[(size_t)b * I + i] & window;
            const int32_t *start = r->bucket_start + (size_t)i * stride;
            const int32_t *column = r->bucket_column + (size_t)i * P;
            REAL *row_sum = depression + (size_t)i * P;
            while (due) {
                const int delay = __builtin_ctzll(due);
                due &= due - 1;
                for (int m = start[delay]; m < start[delay + 1]; m++) {
                    const int j = column[m];
                    last[(size_t)j * I + i] = (int32_t)now;
                    if (depress) row_sum[j] += sample_trace[j];
                }
            }
        }
    }
    if (potentiate) {
        for (int b = 0; b < B; b++) {
            const int32_t *list = post_list + (size_t)b * P;
            const REAL *sample_spikes = post_spikes + (size_t)b * P;
            for (int k = 0; k < post_count[b]; k++) {
                const int j = list[k];
                const int32_t *last = a->last + (size_t)b * n + (size_t)j * I;
                REAL *column_sum = potentiation + (size_t)j * I;
                if (!a->spiked[j]) {
                    a->spiked[j] = 1;
                    a->spiked_list[spiked_columns++] = j;
                }
                for (int i = 0; i < I; i++) {
                    const int32_t arrived = last[i];
                    if (arrived != ARRIVAL_NEVER) column_sum[i] += FN(arrival_trace)(a, now - arrived) * sample_spikes[j];
                }
            }
        }
    }
    if (depress) {
        for (int i = 0; i < I; i++) {
            REAL *row = weight + (size_t)i * P, *row_sum = depression + (size_t)i * P;
            for (int j = 0; j < P; j++) {
                if (row_sum[j] == 0) continue;
                if (!(lateral && j == i)) row[j] = FN(update_plain)(&ud, ud.mean, ud.hard, row[j], row_sum[j], &outside);
                row_sum[j] = 0;
            }
        }
    }
    for (int k = 0; k < spiked_columns; k++) {
        const int j = a->spiked_list[k];
        REAL *column_sum = potentiation + (size_t)j * I;
        a->spiked[j] = 0;
        for (int i = 0; i < I; i++) {
            if (column_sum[i] == 0) continue;
            REAL *target = weight + (size_t)i * P + j;
            if (!(lateral && i == j)) *target = FN(update_plain)(&up, up.mean, up.hard, *target, column_sum[i], &outside);
            column_sum[i] = 0;
        }
    }
    if (depress || potentiate) r->full_pass = outside;
}

/*
 * One row of arrival_rule_step for hard bounds or none, with the flags as
 * constants so that each call site compiles to a vectorised loop.
 */
static inline __attribute__((always_inline)) void FN(arrival_row)(
    const Rule *r, const FN(Update) *ud, const FN(Update) *up, int i, int P, const int depress, const int potentiate,
    const int nearest, REAL decay_pre, const REAL *restrict post_trace, const REAL *restrict post_spikes,
    REAL *restrict trace, REAL *restrict row, int *outside) {
    const uint64_t history = r->bits[i];
    const uint8_t *restrict delay = r->delay + (size_t)i * P;
    REAL *restrict row_trace = trace + (size_t)i * P;
    int out = 0;
    for (int j = 0; j < P; j++) {
        const int arrived = (int)((history >> delay[j]) & 1U);
        /* The trace decays, then an arrival sets it to 1 (nearest) or adds 1. */
        REAL x = row_trace[j] * decay_pre;
        const REAL depression = arrived ? post_trace[j] : (REAL)0;
        if (arrived) x = nearest ? (REAL)1 : x + (REAL)1;
        row_trace[j] = x;
        if (depress || potentiate) {
            REAL value = row[j];
            if (depress) value = FN(update_plain)(ud, ud->mean, ud->hard, value, depression, &out);
            if (potentiate) value = FN(update_plain)(up, up->mean, up->hard, value, x * post_spikes[j], &out);
            row[j] = value;
        }
    }
    *outside |= out;
}

/* One row of arrival_rule_step for soft bounds. */
static void FN(arrival_row_soft)(const Rule *r, FN(Update) *ud, FN(Update) *up, int i, int P, int depress, int potentiate,
                                 REAL decay_pre, const REAL *post_trace, const REAL *post_spikes, REAL *trace, REAL *row) {
    const uint64_t history = r->bits[i];
    const uint8_t *delay = r->delay + (size_t)i * P;
    REAL *row_trace = trace + (size_t)i * P;
    for (int j = 0; j < P; j++) {
        const int arrived = (int)((history >> delay[j]) & 1U);
        REAL x = row_trace[j] * decay_pre;
        const REAL depression = arrived ? post_trace[j] : (REAL)0;
        if (arrived) x = r->nearest ? (REAL)1 : x + (REAL)1;
        row_trace[j] = x;
        if (depress) FN(update_weight)(ud, row + j, depression);
        if (potentiate) FN(update_weight)(up, row + j, x * post_spikes[j]);
    }
}

/*
 * While a weight lies outside its bounds, an update that the PyTorch path
 * skips (SpikeTimingRule.pair returns None for an all-zero side) differs from
 * a zero update, which clamps. Clear `depress` when no spike arrives
 * anywhere, and `potentiate` when every presynaptic trace is 0 after this
 * step's decay and arrivals.
 */
static void FN(arrival_scan)(const Net *net, const Rule *r, int *depress, int *potentiate) {
    const Conn *c = &net->conns[r->conn];
    const int I = c->pre_size, P = c->post_size;
    const REAL *trace = (const REAL *)r->pre_trace;
    const REAL decay_pre = (REAL)r->decay_pre;
    int arrived_any = 0, trace_nonzero = 0;
    for (size_t x = 0; x < (size_t)net->batch * I && !(arrived_any && trace_nonzero); x++) {
        const uint8_t *delay = r->delay + (x % (size_t)I) * P;
        const REAL *row = trace + x * P;
        for (int j = 0; j < P; j++) {
            const int arrived = (int)((r->bits[x] >> delay[j]) & 1U);
            arrived_any |= arrived;
            trace_nonzero |= arrived || row[j] * decay_pre != 0;
        }
    }
    *depress = *depress && arrived_any;
    *potentiate = *potentiate && trace_nonzero;
}

/*
 * Pair STDP with arrival timing, one sample, whole-step delays: STDP.update
 * with ArrivalTracker. A presynaptic spike reaches synapse (i, j) d_ij steps
 * after it was emitted, which is bit d_ij of the spike history of input i.
 * Every synapse keeps its own presynaptic trace (pre_trace is pre x post),
 * so each step decays every trace, as the PyTorch path does, in one pass
 * along the rows that also applies depression and potentiation.
 * SpikeTimingRule.pair skips an update whose pair sum is all zero. While
 * every weight is in bounds a skipped update equals a zero one, so the pass
 * needs to know whether an update applies only after weights left their
 * bounds (full_pass), and then scans the arrivals first.
 */
static void FN(arrival_dense_step)(const Net *net, Rule *r, int depress, int potentiate, const REAL *post_trace,
                                   const REAL *post_spikes);
static void FN(arrival_batch_step)(const Net *net, Rule *r, Scratch *w, int depress, int potentiate, const REAL *post_trace,
                                   const REAL *post_spikes);

static void FN(arrival_rule_step)(const Net *net, Rule *r, Arrivals *arrivals, Scratch *w, int64_t step) {
    const Conn *c = &net->conns[r->conn];
    const int B = net->batch, I = c->pre_size, P = c->post_size;
    const REAL *pre_spikes = (const REAL *)net->nodes[c->pre].spikes;
    const REAL *post_spikes = (const REAL *)net->nodes[c->post].spikes;
    REAL *post_trace = (REAL *)r->post_trace1;
    const REAL decay_post = (REAL)r->decay_post1;
    const int32_t *post_count = w->active_count + (size_t)c->post * B;
    const int32_t *post_list = w->active + w->active_offset[c->post];
    int post_events = 0;
    for (int b = 0; b < B; b++) post_events += post_count[b];

    /* ArrivalTracker._record: this step's spikes become bit 0, and a spike that leaves the word is remembered. */
    for (size_t x = 0; x < (size_t)B * I; x++) {
        if (r->bits[x] >> 63) r->older[x] = step - 64;
        r->bits[x] = (r->bits[x] << 1) | (uint64_t)(pre_spikes[x] > 0);
    }

    int post_trace_nonzero = 0;
    for (size_t x = 0; x < (size_t)B * P; x++) {
        post_trace[x] = post_trace[x] * decay_post;
        post_trace_nonzero |= post_trace[x] != 0;
    }
    int depress = r->depress && post_trace_nonzero;
    int potentiate = r->potentiate && post_events > 0;
    if (arrivals->active && !r->full_pass && r->bounds != BOUNDS_SOFT) {
        r->arrival_steps++;
        if (B > 1)
            FN(arrival_lazy_batch_step)(net, r, arrivals, depress, potentiate, step - net->step0, post_trace, post_spikes,
                                        post_list, post_count);
        else
            FN(arrival_lazy_step)(net, r, arrivals, depress, potentiate, step - net->step0, post_trace, post_spikes,
                                  post_list, post_events);
    } else {
        if (arrivals->active) {
            /* Weights left their bounds: go back to decaying every trace, from the traces the arrival steps give. */
            FN(arrivals_close_trace)(net, r, arrivals, step - net->step0 - 1);
            arrivals_close(arrivals);
        }
        if (B > 1)
            FN(arrival_batch_step)(net, r, w, depress, potentiate, post_trace, post_spikes);
        else
            FN(arrival_dense_step)(net, r, depress, potentiate, post_trace, post_spikes);
    }
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < post_count[b]; k++) {
            const size_t x = (size_t)b * P + post_list[(size_t)b * P + k];
            post_trace[x] = r->nearest ? (REAL)1 : post_trace[x] + (REAL)1;
        }
    }
}

/*
 * The dense pass of arrival_rule_step with several samples: row by row, each
 * sample's traces decay and take their arrivals, the pair sums over the
 * samples collect in sample order, and then the row takes its updates.
 */
static void FN(arrival_batch_step)(const Net *net, Rule *r, Scratch *w, int depress, int potentiate, const REAL *post_trace,
                                   const REAL *post_spikes) {
    const Conn *c = &net->conns[r->conn];
    const int B = net->batch, I = c->pre_size, P = c->post_size;
    REAL *trace = (REAL *)r->pre_trace;
    REAL *weight = (REAL *)c->weight;
    const REAL decay_pre = (REAL)r->decay_pre;
    const int lateral = c->kind == CONN_LATERAL;
    REAL *depression = (REAL *)w->sums, *potentiation = depression + P;

    if (r->full_pass && (depress || potentiate)) FN(arrival_scan)(net, r, &depress, &potentiate);

    FN(Update) ud = FN(update_constants)(r, r->depression_factor, B);
    FN(Update) up = FN(update_constants)(r, r->potentiation_factor, B);
    for (int i = 0; i < I; i++) {
        const uint8_t *delay = r->delay + (size_t)i * P;
        for (int j = 0; j < P; j++) depression[j] = potentiation[j] = 0;
        for (int b = 0; b < B; b++) {
            const uint64_t history = r->bits[(size_t)b * I + i];
            REAL *row_trace = trace + ((size_t)b * I + i) * P;
            const REAL *sample_trace = post_trace + (size_t)b * P, *sample_spikes = post_spikes + (size_t)b * P;
            for (int j = 0; j < P; j++) {
                const int arrived = (int)((history >> delay[j]) & 1U);
                REAL x = row_trace[j] * decay_pre;
                depression[j] += arrived ? sample_trace[j] : (REAL)0;
                if (arrived) x = r->nearest ? (REAL)1 : x + (REAL)1;
                row_trace[j] = x;
                potentiation[j] += x * sample_spikes[j];
            }
        }
        if (!depress && !potentiate) continue;
        REAL *row = weight + (size_t)i * P;
        for (int j = 0; j < P; j++) {
            if (lateral && j == i) continue;
            if (depress) FN(update_weight)(&ud, row + j, depression[j]);
            if (potentiate) FN(update_weight)(&up, row + j, potentiation[j]);
        }
    }
    if (depress || potentiate) r->full_pass = ud.outside | up.outside;
}

/* The dense pass of arrival_rule_step: every trace decays, and every weight takes its update. */
static void FN(arrival_dense_step)(const Net *net, Rule *r, int depress, int potentiate, const REAL *post_trace,
                                   const REAL *post_spikes) {
    const Conn *c = &net->conns[r->conn];
    const int I = c->pre_size, P = c->post_size;
    REAL *trace = (REAL *)r->pre_trace;
    REAL *weight = (REAL *)c->weight;
    const REAL decay_pre = (REAL)r->decay_pre;
    const int lateral = c->kind == CONN_LATERAL;
    if (r->full_pass && (depress || potentiate)) FN(arrival_scan)(net, r, &depress, &potentiate);

    FN(Update) ud = FN(update_constants)(r, r->depression_factor, 1);
    FN(Update) up = FN(update_constants)(r, r->potentiation_factor, 1);
    int outside = 0;
    const int variant = (depress ? 1 : 0) | (potentiate ? 2 : 0) | (r->nearest ? 4 : 0);
    for (int i = 0; i < I; i++) {
        REAL *row = weight + (size_t)i * P;
        /* A lateral connection leaves the weight from a neuron to itself alone. */
        const REAL own = lateral ? row[i] : (REAL)0;
        if (ud.bounds == BOUNDS_SOFT) {
            FN(arrival_row_soft)(r, &ud, &up, i, P, depress, potentiate, decay_pre, post_trace, post_spikes, trace, row);
        } else {
            switch (variant) {
            case 0: FN(arrival_row)(r, &ud, &up, i, P, 0, 0, 0, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            case 1: FN(arrival_row)(r, &ud, &up, i, P, 1, 0, 0, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            case 2: FN(arrival_row)(r, &ud, &up, i, P, 0, 1, 0, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            case 3: FN(arrival_row)(r, &ud, &up, i, P, 1, 1, 0, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            case 4: FN(arrival_row)(r, &ud, &up, i, P, 0, 0, 1, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            case 5: FN(arrival_row)(r, &ud, &up, i, P, 1, 0, 1, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            case 6: FN(arrival_row)(r, &ud, &up, i, P, 0, 1, 1, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            default: FN(arrival_row)(r, &ud, &up, i, P, 1, 1, 1, decay_pre, post_trace, post_spikes, trace, row, &outside); break;
            }
        }
        if (lateral) row[i] = own;
    }
    if (depress || potentiate) r->full_pass = outside | ud.outside | up.outside;
}

/*
 * ArrivalTracker.reported after the last step: for each synapse, the
 * emission step of the newest spike that has arrived. That is the newest
 * spike in `bits` at least `delay` steps old, else the one in `older`; a
 * synapse without either keeps what it had.
 */
static void FN(arrival_finish)(const Net *net, const Rule *r, int64_t last) {
    const Conn *c = &net->conns[r->conn];
    const int I = c->pre_size, P = c->post_size;
    for (size_t x = 0; x < (size_t)net->batch * I; x++) {
        const uint64_t history = r->bits[x];
        int64_t *reported = r->reported + x * P;
        const uint8_t *delay = r->delay + (x % (size_t)I) * P;
        for (int j = 0; j < P; j++) {
            const uint64_t due = history >> delay[j];
            if (due) reported[j] = last - (delay[j] + __builtin_ctzll(due));
            else if (r->older[x] >= 0) reported[j] = r->older[x];
        }
    }
}

/*
 * One step of pair STDP or of the Diehl & Cook rule, in the order of
 * STDP.update and DiehlCookSTDP.update. The traces decay, presynaptic spikes
 * depress, the presynaptic trace takes in the spikes, postsynaptic spikes
 * potentiate, and the postsynaptic traces take in the spikes. An update whose
 * pair sum is all zero is skipped, as SpikeTimingRule.pair skips it.
 */
static void FN(rule_step)(const Net *net, Rule *r, Deferred *deferred, Scratch *w, int64_t step) {
    if (r->arrival) {
        FN(arrival_rule_step)(net, r, &w->arrivals[r - net->rules], w, step);
        return;
    }
    const Conn *c = &net->conns[r->conn];
    const int B = net->batch;
    const int I = c->pre_size;
    const int P = c->post_size;
    const int32_t *pre_active = w->active + w->active_offset[c->pre];
    const int32_t *pre_count = w->active_count + (size_t)c->pre * B;
    const int32_t *post_active = w->active + w->active_offset[c->post];
    const int32_t *post_count = w->active_count + (size_t)c->post * B;
    const REAL *post_spikes = (const REAL *)net->nodes[c->post].spikes;
    REAL *pre_trace = (REAL *)r->pre_trace;
    REAL *post_trace1 = (REAL *)r->post_trace1;
    REAL *post_trace2 = (REAL *)r->post_trace2;
    const int diehl_cook = r->kind == RULE_DIEHL_COOK;
    int pre_events = 0, post_events = 0, pre_trace_nonzero = 0, post_trace_nonzero = 0;

    /* Decay every trace by exp(-dt / tau). */
    const REAL decay_pre = (REAL)r->decay_pre;
    for (size_t x = 0; x < (size_t)B * I; x++) {
        pre_trace[x] = pre_trace[x] * decay_pre;
        pre_trace_nonzero |= pre_trace[x] != 0;
    }
    const REAL decay_post1 = (REAL)r->decay_post1;
    for (size_t x = 0; x < (size_t)B * P; x++) {
        post_trace1[x] = post_trace1[x] * decay_post1;
        post_trace_nonzero |= post_trace1[x] != 0;
    }
    if (diehl_cook) {
        const REAL decay_post2 = (REAL)r->decay_post2;
        for (size_t x = 0; x < (size_t)B * P; x++) post_trace2[x] = post_trace2[x] * decay_post2;
    }
    for (int b = 0; b < B; b++) {
        pre_events += pre_count[b];
        post_events += post_count[b];
    }

    /* Depression at presynaptic spikes reads the postsynaptic trace of earlier steps. */
    if (r->depress && pre_events && post_trace_nonzero && !(deferred->active && deferred->depressed == step))
        FN(depress)(net, r, w);

    /* The presynaptic trace takes in this step's spikes. */
    for (int b = 0; b < B; b++) {
        const int32_t *list = pre_active + (size_t)b * I;
        for (int k = 0; k < pre_count[b]; k++) {
            REAL *x = pre_trace + (size_t)b * I + list[k];
            *x = r->nearest ? (REAL)1 : *x + (REAL)1;
        }
    }
    pre_trace_nonzero |= pre_events > 0;
    if (deferred->active) {
        FN(deferred_step)(net, r, deferred, w, step);
        post_events = 0; /* potentiation is deferred */
    }

    /* Potentiation at postsynaptic spikes; Diehl & Cook gate it by x_post2 from before the spike. */
    int post_nonzero = post_events > 0;
    if (diehl_cook && post_nonzero) {
        post_nonzero = 0;
        for (int b = 0; b < B && !post_nonzero; b++) {
            const int32_t *list = post_active + (size_t)b * P;
            for (int k = 0; k < post_count[b]; k++) {
                const size_t idx = (size_t)b * P + list[k];
                if (post_spikes[idx] * post_trace2[idx] != 0) {
                    post_nonzero = 1;
                    break;
                }
            }
        }
    }
    if (r->potentiate && post_nonzero && pre_trace_nonzero) FN(potentiate)(net, r, w);

    /* The postsynaptic traces take in this step's spikes. */
    for (int b = 0; b < B; b++) {
        const int32_t *list = post_active + (size_t)b * P;
        for (int k = 0; k < post_count[b]; k++) {
            const size_t idx = (size_t)b * P + list[k];
            post_trace1[idx] = r->nearest ? (REAL)1 : post_trace1[idx] + (REAL)1;
            if (diehl_cook) post_trace2[idx] = 1;
        }
    }
}

/* -------------------------------------------------------------- recording */

static void FN(record)(const Net *net, Node *node, int node_index, const Scratch *w, int64_t step) {
    const int B = net->batch;
    const int N = node->size;
    const int32_t *active = w->active + w->active_offset[node_index];
    const int32_t *active_count = w->active_count + (size_t)node_index * B;

    if (node->counts) {
        for (int b = 0; b < B; b++)
            for (int k = 0; k < active_count[b]; k++) node->counts[(size_t)b * N + active[(size_t)b * N + k]] += 1;
    }
    if (node->event_step && step >= node->record_start && (node->record_stop < 0 || step < node->record_stop)) {
        for (int b = 0; b < B; b++) {
            for (int k = 0; k < active_count[b]; k++) {
                node->event_step[node->event_count] = step;
                node->event_index[node->event_count] = active[(size_t)b * N + k];
                node->event_sample[node->event_count] = b;
                node->event_count++;
            }
        }
    }
}

/* ------------------------------------------------------------------- run */

/*
 * Advance the network by up to net->steps steps from step net->step0.
 * Returns the number of steps done: fewer than asked when a spike recorder
 * could overflow (the caller drains it and calls again), or -1 when scratch
 * memory could not be allocated.
 */
int64_t FN(ember_run)(Net *net) {
    Scratch w;
    int64_t done = 0;
    memset(&w, 0, sizeof(w));
    int64_t *slot_now = (int64_t *)malloc(sizeof(int64_t) * (size_t)(net->n_conns + 1));

    if (!slot_now || scratch_open(&w, net, sizeof(REAL)) != 0 || FN(lines_open)(net, &w, net->step0) != 0) {
        free(slot_now);
        scratch_close(&w, net);
        return -1;
    }
    for (int r = 0; r < net->n_rules; r++) {
        if (w.deferred[r].active) FN(deferred_rebase)(net, &net->rules[r], &w.deferred[r], net->step0);
        net->rules[r].arrival_steps = 0;
        FN(arrivals_open)(net, &net->rules[r], &w.arrivals[r]);
    }
    for (; done < net->steps; done++) {
        const int64_t step = net->step0 + done;
        int recorder_full = 0;
        for (int n = 0; n < net->n_nodes; n++) {
            const Node *node = &net->nodes[n];
            if (node->event_step && node->event_capacity - node->event_count < (int64_t)net->batch * node->size)
                recorder_full = 1;
        }
        if (recorder_full) break;
        for (int ci = 0; ci < net->n_conns; ci++) slot_now[ci] = step % net->conns[ci].slots;

        for (int n = 0; n < net->n_nodes; n++) {
            Node *node = &net->nodes[n];
            const int64_t units = (int64_t)net->batch * node->size;
            if (node->kind == NODE_POPULATION) {
                FN(population_step)(net, node, n, &w, slot_now, step);
            } else if (node->kind == NODE_POISSON) {
                /* Draw DRAW_BLOCK steps ahead: the draws do not depend on the network's state. */
                if (done % DRAW_BLOCK == 0) {
                    const int64_t left = net->steps - done;
                    FN(poisson_draw)(net, node, n, &w, step, left < DRAW_BLOCK ? (int)left : DRAW_BLOCK);
                }
                FN(frame_step)(net, node, n, &w, w.drawn + w.drawn_offset[n] + (size_t)(done % DRAW_BLOCK) * units);
            } else {
                FN(frame_step)(net, node, n, &w, node->frames + (size_t)done * units);
            }
            for (int k = 0; k < node->out_count; k++) {
                const int ci = net->out_list[node->out_first + k];
                FN(emit)(net, ci, &w, slot_now, step);
            }
        }
        for (int r = 0; r < net->n_rules; r++) FN(rule_step)(net, &net->rules[r], &w.deferred[r], &w, step);
        for (int n = 0; n < net->n_nodes; n++) FN(record)(net, &net->nodes[n], n, &w, step);
        FN(lines_advance)(net, &w);
    }
    for (int r = 0; r < net->n_rules; r++) {
        if (w.deferred[r].active) FN(deferred_sync_all)(net, &net->rules[r], &w.deferred[r], net->step0 + done);
        if (w.arrivals[r].active) FN(arrivals_close_trace)(net, &net->rules[r], &w.arrivals[r], done - 1);
        if (net->rules[r].arrival && done > 0) FN(arrival_finish)(net, &net->rules[r], net->step0 + done - 1);
    }
    FN(lines_close)(net, &w, net->step0 + done);
    free(slot_now);
    scratch_close(&w, net);
    return done;
}
