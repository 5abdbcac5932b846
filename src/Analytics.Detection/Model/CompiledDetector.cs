using System.Collections;
using System.Collections.Immutable;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Calibrators;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;
using Microsoft.ML.Trainers.FastTree;
using Microsoft.ML.Transforms;

namespace Analytics.Detection.Model;

/// <summary>
/// The trained detector's arithmetic, lifted out of ML.NET once at load: the one-versus-all FastTree
/// ensembles (split feature, threshold, children, leaf values per node), each class's Platt
/// calibration, the sum-to-one normalisation of the class probabilities, and the anomaly model's
/// mean-variance scaling and PCA projection. Scoring a row is then a few hundred array reads over the
/// feature vector, with nothing allocated (issue 16: ML.NET's data views cost ~30 µs a row, more than
/// a million-entity pass may spend on the whole model). ML.NET stays the trainer and the reference:
/// <see cref="TryCompile"/> only accepts a model whose shape it knows (else the caller keeps ML.NET),
/// and a test holds both to the same probabilities and anomaly scores on real feature rows.
/// </summary>
internal sealed class CompiledDetector
{
    // Every tree of every class, their internal nodes numbered one after another. A child below zero
    // is a leaf: ~child indexes _leafValues. Children sit in pairs, lte then gt, so that the step down
    // is one array read indexed by the comparison.
    private readonly int[] _splitFeature;
    private readonly float[] _threshold;
    private readonly int[] _children;
    private readonly double[] _leafValues;

    // Per class: the first and one-past-the-last tree in _roots, then the Platt parameters.
    private readonly int[] _roots;
    private readonly int[] _classTreeStart;
    private readonly double[] _plattSlope;
    private readonly double[] _plattOffset;

    // The anomaly model: scaled = (x - offset) * scale, then PCA's normalised reconstruction error.
    private readonly float[] _scale;
    private readonly float[] _offset;
    private readonly double[][] _eigenVectors;
    private readonly double[] _mean;
    private readonly double[] _meanProjected;
    private readonly double _norm2Mean;

    private CompiledDetector(int features, int[] splitFeature, float[] threshold, int[] children, double[] leafValues, int[] roots, int[] classTreeStart,
        double[] plattSlope, double[] plattOffset, float[] scale, float[] offset, double[][] eigenVectors, double[] mean)
    {
        Features = features;
        _splitFeature = splitFeature;
        _threshold = threshold;
        _children = children;
        _leafValues = leafValues;
        _roots = roots;
        _classTreeStart = classTreeStart;
        _plattSlope = plattSlope;
        _plattOffset = plattOffset;
        _scale = scale;
        _offset = offset;
        _eigenVectors = eigenVectors;
        _mean = mean;
        _meanProjected = eigenVectors.Select(v => Dot(v, mean)).ToArray();
        _norm2Mean = Dot(mean, mean);
    }

    public int Features { get; }

    public int Classes => _plattSlope.Length;

    /// <summary>
    /// The detector as arrays, or null with the reason when the model is not the shape this evaluator
    /// reproduces (another trainer, categorical splits, another calibrator or normaliser).
    /// </summary>
    public static CompiledDetector? TryCompile(ITransformer classifier, ITransformer anomaly, int features, out string? why)
    {
        try
        {
            return Compile(classifier, anomaly, features, out why);
        }
        catch (Exception ex) when (ex is InvalidCastException or NullReferenceException or MissingMemberException or ArgumentException or InvalidOperationException or AmbiguousMatchException or TargetInvocationException)
        {
            why = ex.Message;
            return null;
        }
    }

    private static CompiledDetector? Compile(ITransformer classifier, ITransformer anomaly, int features, out string? why)
    {
        why = null;
        var ova = Parts(classifier).OfType<IPredictionTransformer<object>>().Select(t => t.Model).OfType<OneVersusAllModelParameters>().FirstOrDefault();
        if (ova is null)
        {
            why = "the classifier is not one-versus-all";
            return null;
        }

        // The binary models behind one-versus-all are not public; the property that lists them is.
        var subModels = typeof(OneVersusAllModelParameters).GetProperty("SubModelParameters", BindingFlags.Instance | BindingFlags.NonPublic)?.GetValue(ova) as ImmutableArray<object>?;
        var useDist = typeof(OneVersusAllModelParameters).GetField("_impl", BindingFlags.Instance | BindingFlags.NonPublic)?.GetValue(ova)?.GetType().Name;
        if (subModels is null || subModels.Value.IsDefaultOrEmpty || useDist != "ImplDist")
        {
            why = "the one-versus-all model does not normalise calibrated probabilities";
            return null;
        }

        var splitFeature = new List<int>();
        var threshold = new List<float>();
        var children = new List<int>();
        var leafValues = new List<double>();
        var roots = new List<int>();
        var classTreeStart = new List<int>();
        var slopes = new List<double>();
        var offsets = new List<double>();
        foreach (var sub in subModels.Value)
        {
            var subModel = Property(sub, "SubModel");
            var calibrator = Property(sub, "Calibrator");
            if (subModel is not FastTreeBinaryModelParameters fastTree || calibrator is not PlattCalibrator platt)
            {
                why = $"a class model is {subModel?.GetType().Name} with {calibrator?.GetType().Name}, not FastTree with Platt calibration";
                return null;
            }

            if (!PlattMatches(platt))
            {
                why = "the Platt calibrator's formula is not the one reproduced here";
                return null;
            }

            classTreeStart.Add(roots.Count);
            slopes.Add(platt.Slope);
            offsets.Add(platt.Offset);
            foreach (var tree in fastTree.TrainedTreeEnsemble.Trees)
            {
                if (tree.CategoricalSplitFlags.Any(f => f))
                {
                    why = "a tree has categorical splits";
                    return null;
                }

                var nodeBase = splitFeature.Count;
                var leafBase = leafValues.Count;
                int Child(int c) => c < 0 ? ~(leafBase + ~c) : nodeBase + c;
                for (var n = 0; n < tree.NumberOfNodes; n++)
                {
                    if (tree.NumericalSplitFeatureIndexes[n] >= features)
                    {
                        why = "a tree splits on a feature the vector does not have";
                        return null;
                    }

                    splitFeature.Add(tree.NumericalSplitFeatureIndexes[n]);
                    threshold.Add(tree.NumericalSplitThresholds[n]);
                    children.Add(Child(tree.LeftChild[n]));
                    children.Add(Child(tree.RightChild[n]));
                }

                leafValues.AddRange(tree.LeafValues);

                // A tree that never split is one leaf.
                roots.Add(tree.NumberOfNodes == 0 ? ~leafBase : nodeBase);
            }
        }

        classTreeStart.Add(roots.Count);

        var normalizer = Parts(anomaly).OfType<NormalizingTransformer>().FirstOrDefault();
        var pca = Parts(anomaly).OfType<IPredictionTransformer<object>>().Select(t => t.Model).OfType<PcaModelParameters>().FirstOrDefault();
        if (normalizer is null || pca is null || Parts(anomaly).Count() != 2)
        {
            why = "the anomaly model is not a normaliser followed by PCA";
            return null;
        }

        if (normalizer.GetNormalizerModelParameters(0) is not NormalizingTransformer.AffineNormalizerModelParameters<ImmutableArray<float>> affine || affine.Scale.Length != features)
        {
            why = "the anomaly model's normaliser is not an affine one over the whole vector";
            return null;
        }

        var scale = affine.Scale.ToArray();
        var offset = affine.Offset.IsDefaultOrEmpty ? new float[features] : affine.Offset.ToArray();
        VBuffer<float>[] eigen = [];
        pca.GetEigenVectors(ref eigen, out var rank);
        VBuffer<float> mean = default;
        pca.GetMean(ref mean);
        var eigenVectors = eigen.Take(rank).Select(v => Dense(v, features)).ToArray();
        var meanVector = mean.Length == 0 ? new double[features] : Dense(mean, features);

        return new CompiledDetector(features, [.. splitFeature], [.. threshold], [.. children], [.. leafValues], [.. roots], [.. classTreeStart],
            [.. slopes], [.. offsets], scale, offset, eigenVectors, meanVector);
    }

    // A calibrated model's parts, by name: a derived type redeclares them, and a loaded model's generic
    // arguments may be interfaces, so neither one GetProperty nor a cast to one generic type finds them.
    private static object? Property(object o, string name) =>
        o.GetType().GetProperties(BindingFlags.Instance | BindingFlags.Public).FirstOrDefault(p => p.Name == name && p.GetIndexParameters().Length == 0)?.GetValue(o);

    private static IEnumerable<ITransformer> Parts(ITransformer transformer) =>
        transformer is IEnumerable<ITransformer> chain ? chain.SelectMany(Parts) : [transformer];

    private static double[] Dense(VBuffer<float> v, int length)
    {
        var dense = new double[length];
        var i = 0;
        foreach (var x in v.DenseValues())
        {
            dense[i++] = x;
        }

        return dense;
    }

    // The calibrator's own answer against the formula used here, over the range scores take.
    private static bool PlattMatches(PlattCalibrator platt)
    {
        for (var s = -20f; s <= 20f; s += 0.37f)
        {
            if (Math.Abs(platt.PredictProbability(s) - Platt(s, platt.Slope, platt.Offset)) > 1e-7f)
            {
                return false;
            }
        }

        return true;
    }

    private static float Platt(float score, double slope, double offset) =>
        float.IsNaN(score) ? score : (float)(1 / (1 + Math.Exp(slope * score + offset)));

    /// <summary>
    /// The class probabilities (in the model's slot order, summing to one; <see cref="Classes"/> values
    /// per row in <paramref name="probabilities"/>) and the anomaly score of a block of feature vectors,
    /// tree by tree: one tree's nodes stay in cache while every row of the block walks it, and the
    /// walks of different rows overlap in the CPU; each row's trees are summed in the model's order.
    /// A NaN feature takes the ML.NET path instead (FastTree sends missing values to a per-node default
    /// that its public surface does not show): the caller checks <see cref="CanScore"/>.
    /// </summary>
    public void ScoreBlock(ReadOnlySpan<float[]> rows, Span<float> probabilities, Span<float> anomalies, Span<double> sums, Span<float> scratch)
    {
        foreach (var x in rows)
        {
            if (x.Length < Features)
            {
                throw new ArgumentException($"A feature vector holds {x.Length} values; the model reads {Features}.", nameof(rows));
            }
        }

        var classes = Classes;
        for (var c = 0; c < classes; c++)
        {
            sums[..rows.Length].Clear();
            AddTrees(c, rows, sums);
            for (var e = 0; e < rows.Length; e++)
            {
                probabilities[(e * classes) + c] = Platt((float)sums[e], _plattSlope[c], _plattOffset[c]);
            }
        }

        for (var e = 0; e < rows.Length; e++)
        {
            anomalies[e] = Finish(rows[e], probabilities.Slice(e * classes, classes), scratch);
        }
    }

    // Adds class c's tree outputs to each row's sum. Every index read here was checked when the model
    // was compiled (split features below Features, children within the arrays) and rows are at least
    // Features long, so the walk reads without bounds checks.
    private void AddTrees(int c, ReadOnlySpan<float[]> rows, Span<double> sums)
    {
        ref var feature = ref MemoryMarshal.GetArrayDataReference(_splitFeature);
        ref var threshold = ref MemoryMarshal.GetArrayDataReference(_threshold);
        ref var children = ref MemoryMarshal.GetArrayDataReference(_children);
        for (var t = _classTreeStart[c]; t < _classTreeStart[c + 1]; t++)
        {
            var root = _roots[t];
            for (var e = 0; e < rows.Length; e++)
            {
                ref var x = ref MemoryMarshal.GetArrayDataReference(rows[e]);
                var node = root;
                while (node >= 0)
                {
                    // Greater than, or not comparable: the gt side, as FastTree's "x <= threshold" test sends it.
                    var gt = Unsafe.Add(ref x, Unsafe.Add(ref feature, node)) <= Unsafe.Add(ref threshold, node) ? 0 : 1;
                    node = Unsafe.Add(ref children, (2 * node) + gt);
                }

                sums[e] += _leafValues[~node];
            }
        }
    }

    private float Finish(float[] x, Span<float> probabilities, Span<float> scratch)
    {
        // One-versus-all: negative probabilities clamped to zero, then all divided by their sum.
        double total = 0;
        for (var c = 0; c < probabilities.Length; c++)
        {
            if (float.IsNaN(probabilities[c]))
            {
                continue;
            }

            if (probabilities[c] >= 0)
            {
                total += probabilities[c];
            }
            else
            {
                probabilities[c] = 0;
            }
        }

        if (total > 0)
        {
            for (var c = 0; c < probabilities.Length; c++)
            {
                probabilities[c] = (float)(probabilities[c] / total);
            }
        }

        return Anomaly(x, scratch);
    }

    public static bool CanScore(ReadOnlySpan<float> x)
    {
        foreach (var v in x)
        {
            if (float.IsNaN(v))
            {
                return false;
            }
        }

        return true;
    }

    // PCA's score: how much of the (scaled) vector's distance from the benign mean the principal
    // components leave unexplained, as a share: sqrt((|x - m|^2 - |P(x - m)|^2) / |x - m|^2).
    private float Anomaly(float[] x, Span<float> scaled)
    {
        double norm2 = 0, dotMean = 0;
        for (var i = 0; i < Features; i++)
        {
            scaled[i] = (x[i] - _offset[i]) * _scale[i];
            norm2 += (double)scaled[i] * scaled[i];
            dotMean += _mean[i] * scaled[i];
        }

        var norm2X = norm2 - (2 * dotMean) + _norm2Mean;
        if (norm2X < 0)
        {
            norm2X = 0;
        }

        double norm2U = 0;
        for (var k = 0; k < _eigenVectors.Length; k++)
        {
            var v = _eigenVectors[k];
            double dot = 0;
            for (var i = 0; i < Features; i++)
            {
                dot += v[i] * scaled[i];
            }

            var component = dot - _meanProjected[k];
            norm2U += component * component;
        }

        return (float)Math.Sqrt((norm2X - norm2U) / norm2X);
    }

    private static double Dot(double[] a, double[] b)
    {
        double sum = 0;
        for (var i = 0; i < a.Length; i++)
        {
            sum += a[i] * b[i];
        }

        return sum;
    }
}

/// <summary>
/// A prediction's class probabilities: the model's class names (shared by every prediction of a pass)
/// over one small array, instead of a dictionary per entity.
/// </summary>
internal sealed class ClassProbabilities(string[] classes, float[] values) : IReadOnlyDictionary<string, float>
{
    public float this[string key] => TryGetValue(key, out var v) ? v : throw new KeyNotFoundException(key);

    public IEnumerable<string> Keys => classes;

    public IEnumerable<float> Values => values;

    public int Count => classes.Length;

    public bool ContainsKey(string key) => Array.IndexOf(classes, key) >= 0;

    public bool TryGetValue(string key, out float value)
    {
        var i = Array.IndexOf(classes, key);
        value = i >= 0 ? values[i] : 0;
        return i >= 0;
    }

    public IEnumerator<KeyValuePair<string, float>> GetEnumerator()
    {
        for (var i = 0; i < classes.Length; i++)
        {
            yield return new KeyValuePair<string, float>(classes[i], values[i]);
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
