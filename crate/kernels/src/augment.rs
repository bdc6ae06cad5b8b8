//! Data augmentation of a batch of grey images while training: random horizontal flips, random
//! translations (pad with background and crop, as `RandomCrop(28, padding=k)` does) and random erasing
//! (Zhong et al. 2017, torchvision's `RandomErasing` defaults). Each image draws from its own stream
//! (`mix(seed, image)`), so a batch comes out the same however many threads share the work.

use rayon::prelude::*;

use super::rng::{mix, SplitMix64};

/// What to do to each training image (all off by default).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Mirror left–right with probability ½ (Keras' `RandomFlip("horizontal")`).
    pub flip: bool,
    /// Move by up to this many pixels in each direction, filling with 0 (the background after
    /// normalization): `RandomCrop(28, padding=shift)`, Keras' `RandomTranslation` in pixels.
    pub shift: usize,
    /// With this probability, blank a random rectangle of 2–33 % of the image, aspect 0.3–3.3.
    pub erase: f64,
}

impl Augment {
    /// Whether anything is on.
    pub fn any(&self) -> bool {
        self.flip || self.shift > 0 || self.erase > 0.0
    }
}

/// A uniform number in [0, 1).
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Augments each `h×w` image of `images` in place; image `i` of the batch draws from `mix(seed, i)`.
pub fn augment(images: &mut [f32], (h, w): (usize, usize), a: &Augment, seed: u64) {
    if !a.any() || h * w == 0 {
        return;
    }
    images.par_chunks_mut(h * w).enumerate().for_each(|(i, img)| {
        let mut rng = SplitMix64(mix(seed, i as u64));
        let mut scratch = vec![0f32; h * w];
        one(img, (h, w), a, &mut rng, &mut scratch);
    });
}

fn one(img: &mut [f32], (h, w): (usize, usize), a: &Augment, rng: &mut SplitMix64, scratch: &mut [f32]) {
    if a.flip && rng.next_u64() & 1 == 1 {
        for row in img.chunks_exact_mut(w) {
            row.reverse();
        }
    }
    if a.shift > 0 {
        let span = 2 * a.shift + 1;
        let (dy, dx) = (rng.below(span) as isize - a.shift as isize, rng.below(span) as isize - a.shift as isize);
        if dy != 0 || dx != 0 {
            scratch.fill(0.0);
            for r in 0..h as isize {
                let src = r - dy;
                if src < 0 || src >= h as isize {
                    continue;
                }
                for c in 0..w as isize {
                    let sc = c - dx;
                    if sc >= 0 && sc < w as isize {
                        scratch[r as usize * w + c as usize] = img[src as usize * w + sc as usize];
                    }
                }
            }
            img.copy_from_slice(scratch);
        }
    }
    if a.erase > 0.0 && unit(rng) < a.erase {
        // torchvision: up to 10 tries for a rectangle that fits.
        let area = (h * w) as f64;
        for _ in 0..10 {
            let target = area * (0.02 + unit(rng) * (0.33 - 0.02));
            let ratio = ((0.3f64).ln() + unit(rng) * ((3.3f64).ln() - (0.3f64).ln())).exp();
            let (eh, ew) = ((target * ratio).sqrt().round() as usize, (target / ratio).sqrt().round() as usize);
            if eh == 0 || ew == 0 || eh >= h || ew >= w {
                continue;
            }
            let (top, left) = (rng.below(h - eh + 1), rng.below(w - ew + 1));
            for r in top..top + eh {
                img[r * w + left..r * w + left + ew].fill(0.0);
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<f32> {
        (0..n * 784).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    /// Same seed, same bytes, on 1, 2 and 3 threads.
    #[test]
    fn same_seed_same_images_whatever_the_threads() {
        let a = Augment { flip: true, shift: 2, erase: 0.5 };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut x = batch(37);
            pool.install(|| augment(&mut x, (28, 28), &a, 99));
            x
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
        assert_ne!(one, batch(37), "something changed");
        let mut other = batch(37);
        augment(&mut other, (28, 28), &a, 100);
        assert_ne!(one, other, "another seed, other images");
    }

    /// A flip mirrors the rows; a shift moves the image by at most `shift` pixels and blanks what
    /// comes in; erasing blanks one rectangle.
    #[test]
    fn each_transform_does_what_it_says() {
        let x = batch(64);
        let mut flipped = x.clone();
        augment(&mut flipped, (28, 28), &Augment { flip: true, ..Default::default() }, 1);
        let mut mirrored = 0;
        for (a, b) in x.chunks(784).zip(flipped.chunks(784)) {
            if a != b {
                mirrored += 1;
                for r in 0..28 {
                    let row: Vec<f32> = a[r * 28..(r + 1) * 28].iter().rev().copied().collect();
                    assert_eq!(row, &b[r * 28..(r + 1) * 28]);
                }
            }
        }
        assert!((20..=44).contains(&mirrored), "about half flipped: {mirrored}");
        let mut shifted = x.clone();
        augment(&mut shifted, (28, 28), &Augment { shift: 2, ..Default::default() }, 2);
        for (a, b) in x.chunks(784).zip(shifted.chunks(784)) {
            let found = (-2isize..=2).flat_map(|dy| (-2isize..=2).map(move |dx| (dy, dx))).any(|(dy, dx)| {
                (0..28isize).all(|r| {
                    (0..28isize).all(|c| {
                        let (sr, sc) = (r - dy, c - dx);
                        let want = if (0..28).contains(&sr) && (0..28).contains(&sc) {
                            a[(sr * 28 + sc) as usize]
                        } else {
                            0.0
                        };
                        b[(r * 28 + c) as usize] == want
                    })
                })
            });
            assert!(found, "each image is its original moved by at most 2 pixels");
        }
        let mut erased = vec![1f32; 64 * 784];
        augment(&mut erased, (28, 28), &Augment { erase: 1.0, ..Default::default() }, 3);
        for img in erased.chunks(784) {
            let zeros = img.iter().filter(|&&v| v == 0.0).count();
            assert!((10..=300).contains(&zeros), "a rectangle of 2-33 %: {zeros}");
        }
    }
}
