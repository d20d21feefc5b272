"""Shows that the Keras parity test can fail: applies one-line mutations to the trainer, one at
a time, runs `cargo test --release -p trainer --test keras_parity` (or the tests the mutation
names), reports which tests failed and on what, and restores the file. Run from the
repository root with a clean work tree:

    python3 tools/keras-golden/mutations.py            # all
    python3 tools/keras-golden/mutations.py 3 17       # by index

A mutation whose text is no longer in its file is reported as such (the code moved on).
"""

import subprocess
import sys

L = "trainer/src/arch/layers.rs"
F = "trainer/src/arch/fit.rs"
M = "trainer/src/arch/model.rs"
K = "trainer/src/arch/kernels.rs"
S = "model-spec/src/spec.rs"

# The tests a mutation runs unless it names others.
PARITY = ["--test", "keras_parity"]
LIB_EARLY_STOPPING = ["--lib", "early_stopping"]

# (what, file, text, replacement[, test selection])
MUTATIONS = [
    ("softmax cross-entropy gradient / (n + 1)", M,
     "*g = (p - f32::from(u8::from(j == label))) / n as f32;",
     "*g = (p - f32::from(u8::from(j == label))) / (n + 1) as f32;"),
    ("dense bias gradient x 0.5", L,
     "for &(_, v) in s.columns.of(u) {\n                            *db += v;",
     "for &(_, v) in s.columns.of(u) {\n                            *db += 0.5 * v;"),
    ("dense kernel gradient x 1.01", L,
     "gather_rows(&Rows::matrix(x, inputs), &s.columns, &mut dwt);",
     "gather_rows(&Rows::matrix(x, inputs), &s.columns, &mut dwt); dwt.iter_mut().for_each(|v| *v *= 1.01);"),
    ("dense input gradient dropped for images 64..127 of a pass", L,
     "if let Some(wt) = &wt {\n                        gather_rows(&Rows::matrix(wt, inputs), &s.rows, dx);",
     "if let Some(wt) = &wt.filter(|_| chunk != 1) {\n                        gather_rows(&Rows::matrix(wt, inputs), &s.rows, dx);"),
    ("fused conv + pool: kernel gradient of tap 0 dropped", L,
     "for (t, dw) in s.dw.chunks_exact(filters).enumerate() {",
     "for (t, dw) in s.dw.chunks_exact(filters).enumerate().skip(1) {"),
    ("fused conv + pool: bias gradient x 1.01 per image", L,
     "pooled_grads(&s.cols, pooled, &mut s.dw, &mut db);",
     "pooled_grads(&s.cols, pooled, &mut s.dw, &mut db); db.iter_mut().for_each(|b| *b *= 1.01);"),
    ("unfused conv: kernel gradient skips each chunk's first image", L,
     "gather_rows(&g.rows(&plan, img, cols), columns, &mut dwt);",
     "if i > 0 { gather_rows(&g.rows(&plan, img, cols), columns, &mut dwt); }"),
    ("unfused conv: input gradient of position 0 dropped", L,
     "g.col2im(dcols, &mut dx[i * item_in..][..item_in], |p| {\n                                !rows.of(p).is_empty()",
     "g.col2im(dcols, &mut dx[i * item_in..][..item_in], |p| {\n                                p > 0 && !rows.of(p).is_empty()"),
    ("max pool backward routes to the window's top row only", L,
     "let first = (iy * row + i) as u32;",
     "let first = (iy / P * P * row + i) as u32;"),
    ("ReLU backward passes the gradient where the output is 0", K,
     "let set = if POSITIVE { v > 0.0 } else { v != 0.0 };",
     "let set = if POSITIVE { v >= 0.0 } else { v != 0.0 };"),
    ("dropout backward without the mask", L,
     "        scale_by(&mut dy.data, &mask);\n        recycle(mask);",
     "        recycle(mask);"),
    ("dropout scale 1/rate instead of 1/(1 - rate)", L,
     "        1.0 / (1.0 - self.rate)\n",
     "        1.0 / self.rate\n"),
    ("batch norm input gradient: + xhat * sum(dy * xhat)", L,
     "d[ch] = k * (m * d[ch] - sum_dy[ch] - xh[ch] * sum_dy_xhat[ch]);",
     "d[ch] = k * (m * d[ch] - sum_dy[ch] + xh[ch] * sum_dy_xhat[ch]);"),
    ("batch norm gamma gradient = sum(dy)", L,
     "add(gamma_grad, &sum_dy_xhat);",
     "add(gamma_grad, &sum_dy);"),
    ("batch norm beta gradient x 1.01", L,
     "add(beta_grad, &sum_dy);",
     "add(beta_grad, &sum_dy); beta_grad.iter_mut().for_each(|b| *b *= 1.01);"),
    ("batch norm moving variance update x 1.01", L,
     "var[ch] as f32 * (1.0 - BN_MOMENTUM);",
     "var[ch] as f32 * (1.0 - BN_MOMENTUM) * 1.01;"),
    ("same padding: the extra row/column on top/left instead of bottom/right", S,
     "            (out, total / 2)",
     "            (out, total.div_ceil(2))"),
    ("L2 gradient without the factor 2", F,
     "g += 2.0 * l2 * *w + l1 * sign(*w);",
     "g += l2 * *w + l1 * sign(*w);"),
    ("L1 gradient dropped", F,
     "g += 2.0 * l2 * *w + l1 * sign(*w);",
     "g += 2.0 * l2 * *w;"),
    ("L2 loss halved", M,
     "sum += f64::from(l2) * f64::from(w * w) + f64::from(l1) * f64::from(w.abs());",
     "sum += 0.5 * f64::from(l2) * f64::from(w * w) + f64::from(l1) * f64::from(w.abs());"),
    ("Adam: eps inside the square root", F,
     "*w -= lr_t * *m / (v.sqrt() + EPSILON);",
     "*w -= lr_t * *m / (*v + EPSILON).sqrt();"),
    ("Adam: eps 1e-8", F,
     "const EPSILON: f32 = 1e-7;",
     "const EPSILON: f32 = 1e-8;"),
    ("Adam: no sqrt(1 - beta2^t) in the step size", F,
     "let lr_t = self.lr * (1.0 - BETA_2.powf(t)).sqrt() / (1.0 - BETA_1.powf(t));",
     "let lr_t = self.lr / (1.0 - BETA_1.powf(t));"),
    ("Adam: m with 1 - beta2", F,
     "*m += (g - *m) * ONE_MINUS_BETA_1;",
     "*m += (g - *m) * ONE_MINUS_BETA_2;"),
    ("Adam: 1 - beta2 in f32", F,
     "*v += (g * g - *v) * ONE_MINUS_BETA_2;",
     "*v += (g * g - *v) * (1.0 - BETA_2);"),
    ("L1 gradient at 0 with f32::signum (sign(0) = 1)", F,
     "g += 2.0 * l2 * *w + l1 * sign(*w);",
     "g += 2.0 * l2 * *w + l1 * w.signum();"),
    ("validation loss without the regularisation", F,
     "loss: data_loss + model.regularisation(l2, l1),",
     "loss: data_loss,"),
    ("batch norm inference without epsilon", L,
     "let inv = 1.0 / (self.moving_var[ch] + BN_EPSILON).sqrt();",
     "let inv = 1.0 / self.moving_var[ch].sqrt();"),
    ("early stopping: a tie counts as an improvement", F,
     "Some((best, at)) if val_loss >= best || val_loss.is_nan() => {",
     "Some((best, at)) if val_loss > best || val_loss.is_nan() => {"),
    ("early stopping: one epoch more patience", F,
     "if epoch - at >= self.patience.max(1) {",
     "if epoch - at > self.patience.max(1) {"),
    ("early stopping: one epoch less patience", F,
     "if epoch - at >= self.patience.max(1) {",
     "if epoch - at + 1 >= self.patience.max(1) {"),
    ("early stopping: patience 0 never stops", F,
     "if epoch - at >= self.patience.max(1) {",
     "if epoch - at >= self.patience.max(1) && self.patience > 0 {"),
    # fit's use of the verdicts: trainer/src/arch/tests.rs (`early_stopping_restores_the_best_epoch`).
    ("fit restores the last epoch's weights, not the best", F,
     "Some((epoch, model)) => (model, epoch),",
     "Some((epoch, _best)) => (model, epoch),", LIB_EARLY_STOPPING),
    ("fit reports the epoch after the best", F,
     "Verdict::Best => best = Some((epoch, model.clone())),",
     "Verdict::Best => best = Some((epoch + 1, model.clone())),", LIB_EARLY_STOPPING),
]


def main():
    only = sys.argv[1:]
    escaped = 0
    for i, (what, path, text, replacement, *tests) in enumerate(MUTATIONS):
        tests = tests[0] if tests else PARITY
        if only and str(i) not in only:
            continue
        with open(path) as f:
            source = f.read()
        if source.count(text) != 1:
            print(f"[{i}] {what}: the text is not (once) in {path}", flush=True)
            continue
        with open(path, "w") as f:
            f.write(source.replace(text, replacement))
        try:
            run = subprocess.run(
                ["cargo", "test", "--release", "-p", "trainer", *tests, "--no-fail-fast"],
                capture_output=True, text=True)
        finally:
            with open(path, "w") as f:
                f.write(source)
        out = run.stdout + run.stderr
        if "could not compile" in out:
            print(f"[{i}] {what}: does not compile", flush=True)
            continue
        failed = [l.split()[1] for l in out.splitlines() if l.startswith("test ") and l.endswith("FAILED")]
        escaped += not failed
        print(f"[{i}] {what}: {'caught by ' + ', '.join(failed) if failed else 'NOT CAUGHT'}", flush=True)
        for line in out.splitlines():
            if "above" in line or "is not near zero" in line:
                print("      " + line.strip()[:200], flush=True)
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
