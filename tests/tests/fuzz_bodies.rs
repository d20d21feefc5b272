//! The cargo-fuzz targets' bodies (`e2e_tests::fuzz`) on stable, in every `cargo test`:
//! over the committed seed corpus (`fuzz/seeds/`), the real model
//! (`firmware-example/assets/model.bin`), and pseudo-random mutants of them. The long runs with libFuzzer's coverage guidance are in
//! `fuzz/README.md`; this keeps the bodies and their properties from rotting between them.

use e2e_tests::{fuzz, workspace_root};

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four of libFuzzer's simplest mutations: flip a bit, set a byte, write an
/// extreme 32-bit value, insert or delete a byte, cut the tail.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len());
        match rng.below(6) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 if !b.is_empty() => b[at] = rng.next() as u8,
            2 if b.len() >= 4 => {
                let at = rng.below(b.len() - 3);
                let v: [u32; 5] = [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX];
                let v = v[rng.below(v.len())];
                let bytes = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                b[at..at + 4].copy_from_slice(&bytes);
            }
            3 => b.insert(at, rng.next() as u8),
            4 if !b.is_empty() => {
                b.remove(at);
            }
            _ => b.truncate(at),
        }
    }
    b
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = workspace_root().join("fuzz/seeds").join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("entry").path()).expect("read seed"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{} is empty", dir.display());
    seeds
}

#[test]
fn idx_reader_on_seeds_and_mutants() {
    let mut rng = Rng(0x5eed_0002);
    for seed in seeds("idx_reader") {
        // Each seed is a valid images or labels file, raw or gzipped.
        assert_eq!(fuzz::idx_reader(&seed), 1);
        for _ in 0..5_000 {
            fuzz::idx_reader(&mutate(&seed, &mut rng));
        }
    }
}

#[test]
fn stack_loader_on_its_seed_and_mutants() {
    let seed = fuzz::stack_seed();
    let committed = seeds("stack_loader");
    assert_eq!(committed.len(), 1, "one seed: small.bin");
    assert_eq!(
        committed[0], seed,
        "fuzz/seeds/stack_loader/small.bin is stack_seed()"
    );
    assert_eq!(
        fuzz::stack_loader(&seed),
        2,
        "loads and runs as given and fixed up"
    );
    let mut rng = Rng(0x5eed_0003);
    let mut inferred = 0;
    for _ in 0..20_000 {
        inferred += usize::from(fuzz::stack_loader(&mutate(&seed, &mut rng)) > 0);
    }
    // Most mutants of the real model still decode once the CRC is fixed up, and then
    // run two inferences each (the tutorial's plan: one fused stage): fewer of them.
    let real = std::fs::read(workspace_root().join("firmware-example/assets/model.bin"))
        .expect("real model");
    assert_eq!(
        fuzz::stack_loader(&real),
        2,
        "the real model as given and fixed up"
    );
    let mut real_inferred = 0;
    for _ in 0..300 {
        real_inferred += usize::from(fuzz::stack_loader(&mutate(&real, &mut rng)) > 0);
    }
    // Enough mutants get past the loader to exercise the kernels on hostile parameters.
    assert!(
        inferred > 1_000 && real_inferred > 40,
        "only {inferred} and {real_inferred} mutants reached inference"
    );
    eprintln!(
        "{inferred} of 20000 mutants of the seed and {real_inferred} of 300 of the real model reached inference"
    );
}

/// Writes the seed file when `WRITE_STACK_SEED=1` (after changing `stack_seed`).
#[test]
fn write_stack_seed_when_asked() {
    if std::env::var_os("WRITE_STACK_SEED").is_some() {
        let path = workspace_root().join("fuzz/seeds/stack_loader/small.bin");
        std::fs::write(&path, fuzz::stack_seed()).expect("write the seed");
    }
}
