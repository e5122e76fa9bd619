-- The Microscope store. One file, rebuilt from shards by `microscope ingest` and replaced atomically.
-- Every per-unit row is keyed by (model_id, layer, unit); every artefact names the run (job) that made it,
-- and runs carry technique, params, seed, dataset and time: the provenance shown on each page.
-- Any change to these tables bumps store.SCHEMA_VERSION: a store is rebuilt, never patched, and a store of
-- another version is refused with one line saying how to rebuild it.

CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

CREATE TABLE models (
    model_id VARCHAR PRIMARY KEY,
    arch VARCHAR NOT NULL,
    source VARCHAR NOT NULL,          -- bundled | builtin | hf-hub | local-dir | factory
    hub_id VARCHAR,
    revision VARCHAR,
    location VARCHAR,                 -- local-dir folder or factory reference
    input_size INTEGER NOT NULL,
    mean DOUBLE[] NOT NULL,
    std DOUBLE[] NOT NULL,
    labels VARCHAR,
    description VARCHAR
);

CREATE TABLE layers (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,           -- canonical named_modules() path
    position INTEGER NOT NULL,        -- order in the network
    alias VARCHAR,
    units INTEGER NOT NULL,
    height INTEGER NOT NULL,          -- activation map size
    width INTEGER NOT NULL,
    rf_px INTEGER NOT NULL,           -- effective receptive field, input pixels
    PRIMARY KEY (model_id, layer)
);

CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,       -- the job key
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    technique VARCHAR NOT NULL,
    unit_start INTEGER NOT NULL,
    unit_stop INTEGER NOT NULL,
    params JSON NOT NULL,
    seed BIGINT,
    dataset VARCHAR,
    images_seen BIGINT,
    images_skipped BIGINT,
    device VARCHAR,
    finished_at TIMESTAMP NOT NULL,
    seconds DOUBLE
);

CREATE TABLE unit_stats (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    run_id VARCHAR NOT NULL,
    images BIGINT NOT NULL,
    mean DOUBLE, std DOUBLE, min DOUBLE, max DOUBLE,
    p50 DOUBLE, p90 DOUBLE, p99 DOUBLE,
    frac_positive DOUBLE,
    dead BOOLEAN NOT NULL,
    hist_lo DOUBLE, hist_hi DOUBLE,
    hist_counts BIGINT[],
    PRIMARY KEY (model_id, layer, unit)
);

CREATE TABLE dataset_examples (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    kind VARCHAR NOT NULL,            -- top | bottom | quantile
    rank INTEGER NOT NULL,
    quantile DOUBLE,
    image_id VARCHAR NOT NULL,
    activation DOUBLE NOT NULL,
    pos_y INTEGER NOT NULL, pos_x INTEGER NOT NULL,   -- argmax cell in the activation map
    box INTEGER[] NOT NULL,           -- crop: left, top, right, bottom in input pixels
    source_image VARCHAR,             -- the image the example was cut from (a sample crop's photo), NULL: unknown
    source_box INTEGER[],             -- the crop in that image's pixels: no two examples of a unit share a place
    heat_cells INTEGER NOT NULL,      -- side of the activation window under the crop (0: none)
    heat BLOB,                        -- float16 row-major heat_cells x heat_cells
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, kind, rank)
);

-- Per unit, its mean path over its strongest top examples (store/trust.py: what each channel of the layer's input
-- adds to the unit's activation, float16), and the lowest cosine of one example's path with the mean of the others.
CREATE TABLE top_paths (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    path BLOB NOT NULL,
    natural_floor DOUBLE,             -- NULL with fewer than 3 top examples
    examples INTEGER NOT NULL,        -- the top examples averaged
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit)
);

CREATE TABLE images (
    image_id VARCHAR PRIMARY KEY,     -- <dataset key>:<index>
    dataset VARCHAR NOT NULL,
    source VARCHAR,                   -- where the image came from, for people
    format VARCHAR NOT NULL,
    data BLOB NOT NULL
);

CREATE TABLE thumbnails (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    technique VARCHAR NOT NULL,       -- what the picture shows (dataset: the top example's crop)
    format VARCHAR NOT NULL,
    data BLOB NOT NULL,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, technique)
);

-- Tuning curves (technique `tuning`): a unit's response to every stimulus of a synthetic family
-- (store/stimuli.py), as a grid over the family's axes, and a summary per axis.
CREATE TABLE tuning (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    family VARCHAR NOT NULL,          -- gratings | curves | colour | edges | lines
    axes JSON NOT NULL,               -- [{name, unit, values, period}]: the grid's axes in order
    shape INTEGER[] NOT NULL,         -- values per axis
    response FLOAT[] NOT NULL,        -- spatial-max activation per stimulus, row-major over the axes
    response_centre FLOAT[] NOT NULL, -- activation at the map's centre position, same order
    best DOUBLE NOT NULL,             -- max of response (relative to unit_stats.max: computed when read)
    best_centre DOUBLE NOT NULL,
    blank DOUBLE NOT NULL,            -- spatial-max response to a uniform mid-grey field: the baseline
    preferred DOUBLE[] NOT NULL,      -- per axis: the value of the peak (degrees for angles)
    width DOUBLE[] NOT NULL,          -- per axis: full width at half max of the curve along it (NULL: flat)
    selectivity DOUBLE[] NOT NULL,    -- per axis: 1 - circular variance (circular axes only, else NULL)
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, family)
);

-- Feature visualisation (technique `featurevis`): images optimised to drive one unit (channel: its mean
-- activation; neuron: its centre position; negative: the opposite; diversity: FACETS images pushed apart).
CREATE TABLE featurevis (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    technique VARCHAR NOT NULL,       -- channel | neuron | negative | diversity
    facet INTEGER NOT NULL,           -- channel: the seed (0, 1: store/trust.py); diversity: the image's index
    image BLOB NOT NULL,              -- WebP
    achieved DOUBLE NOT NULL,         -- the objective's score on the final image (channel: mean activation)
    spatial_max DOUBLE NOT NULL,      -- the unit's spatial max on the image: unit_stats' measure
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, technique, facet)
);

-- How far to trust a unit's channel picture (store/trust.py): the correlation of the layer's profiles (every
-- unit's spatial max) on its two seeds' pictures, and the unit's path on the first picture (float16).
CREATE TABLE featurevis_trust (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    seed_agreement DOUBLE,            -- NULL where a profile is constant
    seed_baseline DOUBLE,             -- the closest another unit's second picture comes (NULL: no other unit)
    path BLOB,                        -- NULL where the layer's module cannot be run alone on its input
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit)
);

-- Whole-layer renders: DeepDream (the layer's overall activation) and caricatures of bundled photos.
CREATE TABLE layer_visuals (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    technique VARCHAR NOT NULL,       -- deepdream | caricature
    facet INTEGER NOT NULL,
    source VARCHAR NOT NULL,          -- the photo a caricature exaggerates ('' for DeepDream)
    image BLOB NOT NULL,
    source_image BLOB,
    achieved DOUBLE NOT NULL,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, technique, facet)
);

-- Circuits (technique `circuits`): the weights between units of neighbouring layers, nonlinearities set aside
-- ("Visualizing Weights", Distill 2021; precompute/techniques/circuits.py on precompute/linear_paths.py). Per unit, its strongest input neighbours in
-- each of the layers before it (hops 1: the adjacent layer; more: expanded weights through the layers between)
-- and its strongest output neighbours in the next layer, each with the kernel that connects them.
CREATE TABLE circuits (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    direction VARCHAR NOT NULL,       -- input: other_layer feeds this unit; output: this unit feeds other_layer
    other_layer VARCHAR NOT NULL,
    hops INTEGER NOT NULL,            -- layers from the input side to the output side (1: adjacent)
    other_unit INTEGER NOT NULL,
    rank INTEGER NOT NULL,            -- 0: strongest, within the weight's sign
    weight DOUBLE NOT NULL,           -- signed sum of the kernel: the response to a uniform unit input
    norm DOUBLE NOT NULL,             -- L2 norm of the kernel
    kernel_h INTEGER NOT NULL,
    kernel_w INTEGER NOT NULL,
    kernel BLOB NOT NULL,             -- float32 little-endian, row-major kernel_h x kernel_w, in input-map cells
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, direction, other_layer, other_unit)
);

-- The whole weight matrix between a layer and each source it has weights from: one row per unit of the layer.
CREATE TABLE circuit_matrix (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    source VARCHAR NOT NULL,
    hops INTEGER NOT NULL,
    weights FLOAT[] NOT NULL,         -- signed kernel sums, one per unit of the source layer
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, source)
);

-- Per layer and source: whether the path is linear (status ok | not_linear | error, with the reason) and
-- the kernels' window (cut to at most precompute.linear_paths.MAX_KERNEL cells a side) and full extent.
CREATE TABLE circuit_paths (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    hops INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    message VARCHAR,
    kernel_h INTEGER, kernel_w INTEGER,
    support_h INTEGER, support_w INTEGER,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, source)
);

-- Similar units (technique `similar`, precompute/techniques/similar.py): each unit's spatial-max response to a
-- sample of the dataset's images, named by their index in the dataset (response_images, one row per run).
CREATE TABLE unit_responses (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    run_id VARCHAR NOT NULL,
    responses BLOB NOT NULL,          -- float16 little-endian, one per image of the run's response_images row
    PRIMARY KEY (model_id, layer, unit)
);

CREATE TABLE response_images (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,            -- the first unit of the run (a run's rows replace an older run's by it)
    run_id VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,         -- the dataset reference: models shown the same dataset share its indices
    images BIGINT[] NOT NULL,         -- dataset indices, in order
    PRIMARY KEY (model_id, layer, unit)
);

-- Derived by ingest from every model's responses (store/similarity.py), so that a model added later is
-- compared with those already in the store: each unit's strongest neighbours by the correlation of their
-- responses, in its own layer (scope layer), in its model's other layers (model) and in each other model
-- (store), and the linear CKA of every pair of layers.
CREATE TABLE similar_units (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    scope VARCHAR NOT NULL,           -- layer | model | store
    rank INTEGER NOT NULL,            -- 0: strongest, within the scope (and other model)
    other_model VARCHAR NOT NULL,
    other_layer VARCHAR NOT NULL,
    other_unit INTEGER NOT NULL,
    score DOUBLE NOT NULL,            -- Pearson correlation over the images both were shown
    PRIMARY KEY (model_id, layer, unit, other_model, other_layer, other_unit)
);

CREATE TABLE layer_similarity (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    other_model VARCHAR NOT NULL,
    other_layer VARCHAR NOT NULL,
    cka DOUBLE NOT NULL,              -- linear CKA of the two layers' standardised responses
    PRIMARY KEY (model_id, layer, other_model, other_layer)
);

-- Class votes (technique `classes`, precompute/techniques/classes.py): per unit, the classes whose logits it
-- raises (up) and lowers (down) most, through the linearised path to the classifier (the change of the logit
-- when the unit's whole map rises by 1; ReLUs as identity, batch norm folded), and the classes the model
-- predicts most often on the unit's top dataset images (predicted, with counts).
CREATE TABLE unit_classes (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    kind VARCHAR NOT NULL,            -- up | down | predicted
    rank INTEGER NOT NULL,            -- 0: strongest (up, down) or most frequent (predicted)
    class_index INTEGER NOT NULL,
    label VARCHAR,                    -- the class's name (ImageNet's); NULL where the model has no labels
    weight DOUBLE,                    -- up, down: the change of the class's logit
    z DOUBLE,                         -- up, down: that change as a z-score over all classes (scale-free)
    count INTEGER,                    -- predicted: how many of the unit's top images the model gives this class
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit, kind, rank)
);

-- Per layer: whether its path to the logits is linear (status ok | not_linear | error | no_classifier, with
-- the reason), the module whose output is the logits ('' for the model itself) and the number of classes.
CREATE TABLE class_paths (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    message VARCHAR,
    classifier VARCHAR,
    classes INTEGER,
    labeled BOOLEAN NOT NULL,         -- labels are the classes' names (else class indices)
    top_images INTEGER,               -- top dataset images per unit that the predictions count over
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer)
);

-- Sparse dictionaries (technique `dictionary`): one row per dictionary, keyed by its feature layer
-- (BASE/NAME, a layer of the layers table), with its quality on held-out positions and its stability
-- (each feature's best decoder cosine in a second dictionary trained with another seed).
CREATE TABLE dictionaries (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,           -- the feature layer, e.g. blocks.5/topk8x
    base_layer VARCHAR NOT NULL,      -- the layer whose activation vectors it decomposes
    name VARCHAR NOT NULL,            -- topk8x, topk2048, topk8x-k16
    features INTEGER NOT NULL,
    k INTEGER NOT NULL,               -- features active per position (TopK)
    seed BIGINT NOT NULL,
    second_seed BIGINT NOT NULL,      -- the seed of the dictionary its stability is measured against
    explained_variance DOUBLE NOT NULL,  -- on held-out positions: 1 - residual / total variance
    second_explained_variance DOUBLE,
    mean_l0 DOUBLE NOT NULL,          -- active features per held-out position
    dead_share DOUBLE NOT NULL,       -- features active at no sampled position
    dense_share DOUBLE NOT NULL,      -- features active at more than a tenth of positions
    stable_share DOUBLE NOT NULL,     -- live features whose best cosine in the second seed reaches stable_cosine
    stability_median DOUBLE NOT NULL, -- median best cosine of the live features
    stable_cosine DOUBLE NOT NULL,
    positions BIGINT NOT NULL,        -- activation vectors trained on (a uniform sample of the dataset's)
    held_out_positions BIGINT NOT NULL,
    steps INTEGER NOT NULL,
    train_nmse DOUBLE,
    b_pre FLOAT[] NOT NULL,           -- the pre-encoder bias, over the base layer's channels
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer)
);

-- One row per feature: its decoder direction over the base layer's channels (unit norm), its encoder row
-- (so the store holds the whole dictionary), how often it fires, its stability and its best single channel.
CREATE TABLE dictionary_features (
    model_id VARCHAR NOT NULL,
    layer VARCHAR NOT NULL,           -- the feature layer
    unit INTEGER NOT NULL,            -- the feature
    direction FLOAT[] NOT NULL,
    encoder FLOAT[] NOT NULL,
    encoder_bias FLOAT NOT NULL,
    frequency DOUBLE NOT NULL,        -- share of sampled positions where it is active
    seed_cosine DOUBLE NOT NULL,      -- best decoder cosine in the second seed's dictionary
    seed_match INTEGER NOT NULL,      -- that feature of the second dictionary
    stable BOOLEAN NOT NULL,          -- seed_cosine >= the dictionary's stable_cosine (else: one seed only)
    channel_cosine DOUBLE NOT NULL,   -- best |cosine| with a single channel of the base layer
    best_channel INTEGER NOT NULL,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (model_id, layer, unit)
);
