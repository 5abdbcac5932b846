using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Analytics.Detection.Features;
using Analytics.Detection.Model;
using Analytics.Store;
using Microsoft.Extensions.Logging;

namespace Analytics.Detection.Scoring;

/// <summary>The outcome of one scoring pass.</summary>
public sealed record ScoringPass(DateTime AsOf, int Entities, int Flagged, TimeSpan FeatureTime, TimeSpan ModelTime, TimeSpan Total, string ModelVersion, IReadOnlyList<Verdict> Verdicts)
{
    /// <summary>Writing the verdicts to the store and handing them to the listeners.</summary>
    public TimeSpan WriteTime { get; init; }
}

/// <summary>
/// One pass: features of the entities active since the previous pass (from the aggregates), the
/// model's verdicts (the rules when no model is usable), reasons for the flagged ones, and the
/// verdicts written to <c>verdicts</c> and handed to in-process listeners. Flagged and anomalous
/// entities are written; so is the first normal verdict after a flag, so that recovery is recorded.
/// </summary>
public sealed partial class Scorer
{
    private const string Columns = "scored_at, entity_kind, entity, class, score, probabilities, anomaly, anomalous, flagged, explanation, reasons, model_version, node";

    private readonly IClickHouseStore _store;
    private readonly ModelProvider _models;
    private readonly FeatureReader _features;
    private readonly IReadOnlyList<IVerdictListener> _listeners;
    private readonly ILogger _logger;
    private readonly string _node;
    private readonly HashSet<EntityRef> _flagged = [];
    private DateTime? _lastPass;

    public Scorer(IClickHouseStore store, ModelProvider models, IEnumerable<IVerdictListener> listeners, ILogger logger, string node)
    {
        _store = store;
        _models = models;
        _features = new FeatureReader(store);
        _listeners = listeners.ToList();
        _logger = logger;
        _node = node;
    }

    public async Task<ScoringPass> ScoreOnceAsync(DateTime asOf, TimeSpan firstLookback, CancellationToken cancellationToken = default)
    {
        var total = Stopwatch.StartNew();
        var since = (_lastPass ?? asOf - firstLookback).AddMinutes(-1);
        var entities = await _features.ReadAsync(asOf, since, cancellationToken);
        var featureTime = total.Elapsed;
        var model = _models.Refresh();
        var verdicts = model is null ? ByRules(entities, asOf) : ByModel(model, entities, asOf);
        var modelTime = total.Elapsed - featureTime;

        var written = new List<Verdict>();
        foreach (var v in verdicts)
        {
            var key = v.Entity;
            if (v.Flagged || v.Anomalous)
            {
                _flagged.Add(key);
                written.Add(v);
            }
            else if (_flagged.Remove(key))
            {
                written.Add(v);
            }
        }

        var writeStart = total.Elapsed;
        if (written.Count > 0)
        {
            await WriteAsync(_store, written, _node, cancellationToken);
            foreach (var listener in _listeners)
            {
                listener.OnVerdicts(written);
            }
        }

        _lastPass = asOf;
        var flagged = written.Count(v => v.Flagged);
        if (flagged > 0)
        {
            LogPass(_logger, entities.Count, flagged, total.ElapsedMilliseconds, model?.Version ?? "rules");
        }

        return new ScoringPass(asOf, entities.Count, flagged, featureTime, modelTime, total.Elapsed, model?.Version ?? "rules", written)
        {
            WriteTime = total.Elapsed - writeStart,
        };
    }

    /// <summary>Appends verdicts to <c>verdicts</c> (RowBinary), as a pass does.</summary>
    public static Task WriteAsync(IClickHouseStore store, IReadOnlyList<Verdict> verdicts, string node, CancellationToken cancellationToken = default) =>
        verdicts.Count == 0 ? Task.CompletedTask : store.InsertRowBinaryAsync("verdicts", Columns, Encode(verdicts, node), null, cancellationToken);

    public static List<Verdict> ByModel(DetectionModel model, IReadOnlyList<EntityFeatures> entities, DateTime asOf)
    {
        var predictions = model.Predict(entities);
        var flaggedIndexes = Enumerable.Range(0, entities.Count)
            .Where(i => predictions[i].Flagged(model.Card.FlagThreshold) || predictions[i].IsAnomalous).ToList();
        var reasons = Explainer.Explain(model, flaggedIndexes.Select(i => entities[i]).ToList(), flaggedIndexes.Select(i => predictions[i]).ToList());
        var reasonOf = flaggedIndexes.Select((i, k) => (i, k)).ToDictionary(x => x.i, x => reasons[x.k]);
        var list = new List<Verdict>(entities.Count);
        for (var i = 0; i < entities.Count; i++)
        {
            var p = predictions[i];
            var flagged = p.Flagged(model.Card.FlagThreshold);
            list.Add(new Verdict(asOf, entities[i].Entity, flagged ? p.Class : ThreatClass.Benign, p.Score,
                p.Probabilities, p.Anomaly, p.IsAnomalous, flagged, reasonOf.GetValueOrDefault(i) ?? [], model.Version));
        }

        return list;
    }

    public static List<Verdict> ByRules(IReadOnlyList<EntityFeatures> entities, DateTime asOf) =>
        entities.Select(f =>
        {
            var cls = BaselineRules.Classify(f);
            var flagged = cls != ThreatClass.Benign;
            return new Verdict(asOf, f.Entity, cls, flagged ? 1f : 0f,
                new Dictionary<string, float> { [cls.ToText()] = 1f }, 0, false, flagged, Explainer.ExplainRules(f, cls), "rules");
        }).ToList();

    private static byte[] Encode(IReadOnlyList<Verdict> verdicts, string node)
    {
        var w = new ArrayBufferWriter<byte>(verdicts.Count * 256);
        foreach (var v in verdicts)
        {
            Int64(w, new DateTimeOffset(v.ScoredAt).ToUnixTimeMilliseconds());
            Byte(w, (int)v.Entity.Kind);
            Str(w, v.Entity.Name);
            Str(w, v.Class.ToText());
            Float(w, v.Score);
            VarUInt(w, (ulong)v.Probabilities.Count);
            foreach (var (k, p) in v.Probabilities)
            {
                Str(w, k);
                Float(w, p);
            }

            Float(w, v.Anomaly);
            Byte(w, v.Anomalous ? 1 : 0);
            Byte(w, v.Flagged ? 1 : 0);
            Str(w, v.Explanation);
            VarUInt(w, (ulong)v.Reasons.Count);
            foreach (var r in v.Reasons)
            {
                Str(w, r);
            }

            Str(w, v.ModelVersion);
            Str(w, node);
        }

        return w.WrittenSpan.ToArray();
    }

    private static void Byte(ArrayBufferWriter<byte> w, int v)
    {
        w.GetSpan(1)[0] = (byte)v;
        w.Advance(1);
    }

    private static void Int64(ArrayBufferWriter<byte> w, long v)
    {
        BinaryPrimitives.WriteInt64LittleEndian(w.GetSpan(8), v);
        w.Advance(8);
    }

    private static void Float(ArrayBufferWriter<byte> w, float v)
    {
        BinaryPrimitives.WriteSingleLittleEndian(w.GetSpan(4), v);
        w.Advance(4);
    }

    private static void VarUInt(ArrayBufferWriter<byte> w, ulong v)
    {
        var span = w.GetSpan(10);
        var p = 0;
        while (v >= 0x80)
        {
            span[p++] = (byte)(v | 0x80);
            v >>= 7;
        }

        span[p++] = (byte)v;
        w.Advance(p);
    }

    private static void Str(ArrayBufferWriter<byte> w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        VarUInt(w, (ulong)bytes.Length);
        w.Write(bytes);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Scoring pass: {Entities} active entities, {Flagged} flagged in {Elapsed} ms (model {Model})")]
    private static partial void LogPass(ILogger logger, int entities, int flagged, long elapsed, string model);
}
