// int8 weights packed four to a 32-bit word, low byte first.

// Value j % 4 of `word`, sign-extended: the arithmetic right shift of a
// left-aligned byte.
fn int8_at(word: i32, j: u32) -> f32 {
    return f32((word << (24u - 8u * (j % 4u))) >> 24u);
}
