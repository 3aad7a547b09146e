//! Every Rust block of README.md stands verbatim in `examples/readme.rs`,
//! which `cargo test` compiles with the other examples: a snippet that
//! stops compiling fails the build, and one edited in the README alone
//! fails here.

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

#[test]
fn readme_snippets_are_compiled_in_the_readme_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example = std::fs::read_to_string(format!("{root}/examples/readme.rs")).expect("examples/readme.rs");
    let ex = lines(&example);
    let mut blocks = 0;
    for (i, block) in readme.split("```rust\n").skip(1).enumerate() {
        let code = block.split("```").next().unwrap_or("");
        let want = lines(code);
        assert!(!want.is_empty(), "README rust block {i} is empty");
        let found = ex.windows(want.len()).any(|w| w == want.as_slice());
        assert!(
            found,
            "README rust block {i} is not in examples/readme.rs verbatim:\n{code}"
        );
        blocks += 1;
    }
    assert!(blocks >= 4, "found only {blocks} rust blocks in README.md");
}
