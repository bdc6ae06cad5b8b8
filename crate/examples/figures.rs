//! Renders every figure from a short real training run into a folder, to look at them.
//!
//! `cargo run --release -p fashion --example figures -- runs/figures`
use fashion::prelude::*;

fn main() -> fashion::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "runs/figures".into());
    let data = load_data()?.subset(6000, 10000);
    let (x, tx) = (data.train.normalized(), data.test.normalized());
    let mut m = Model::<MlpArch>::new(42)?;
    m.compile(Adam::default());
    let h = m.fit(&x, &data.train.labels, FitOptions { epochs: 2, validation_split: 0.1, ..Default::default() })?;
    let p = m.predict(&tx)?;
    let cm = ConfusionMatrix::from_probabilities(&data.test.labels, &p)?;
    let first = data.train.images.index_axis(Axis(0), 0);
    plot::image_with_colorbar(&first)?.save(format!("{out}/image.png"))?;
    plot::image_grid(&data.train, 5, 5)?.save(format!("{out}/grid.png"))?;
    plot::prediction_grid(&data.test, &p, 10, 10, 42)?.save(format!("{out}/predictions.png"))?;
    plot::image_and_probabilities(&data.test, &p, 0)?.save(format!("{out}/pair.png"))?;
    plot::prediction_pairs(&data.test, &p, 5, 3)?.save(format!("{out}/pairs.png"))?;
    plot::value_array(&p.row(1).to_owned(), Some(data.test.labels[1] as usize))?
        .save(format!("{out}/value_array.png"))?;
    plot::training_curves(&[("mlp", &h)])?.save(format!("{out}/curves.png"))?;
    plot::confusion_matrix(&cm)?.save(format!("{out}/confusion.png"))?;
    plot::pixel_histograms(&data.train.images, &x)?.save(format!("{out}/histograms.png"))?;
    plot::confident_mistakes(&data.test, &p, 20, 5)?.save(format!("{out}/mistakes.png"))?;
    let mut linear = Model::<LinearArch>::new(42)?;
    linear.verbosity = Verbosity::Silent;
    linear.compile(Adam::default());
    let quiet = |epochs| FitOptions { epochs, validation_split: 0.2, ..Default::default() };
    linear.fit(&x, &data.train.labels, quiet(3))?;
    let w = Array2::from_shape_vec((10, 784), linear.network().1.weight.as_vec())?;
    plot::weight_images(&w)?.save(format!("{out}/weights.png"))?;
    let mut sweep = Spread::default();
    for lr in [3e-4, 1e-3, 3e-3] {
        for seed in [1, 2] {
            let mut m = Model::<MlpArch>::new(seed)?;
            m.verbosity = Verbosity::Silent;
            m.compile(Adam { learning_rate: lr, ..Adam::default() });
            let h = m.fit(&x, &data.train.labels, quiet(2))?;
            sweep.add("128 hidden", lr, h.last().and_then(|e| e.val_accuracy).unwrap_or(0.0));
        }
    }
    plot::spread(&sweep, "validation accuracy after 2 epochs", "learning rate", "val_accuracy", true)?
        .save(format!("{out}/sweep.png"))?;
    println!("figures written to {out}/");
    Ok(())
}
