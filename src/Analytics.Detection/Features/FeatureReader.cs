using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Analytics.Store;

namespace Analytics.Detection.Features;

/// <summary>Runs the feature query as of a time, for the entities active since another.</summary>
public sealed class FeatureReader
{
    private static readonly string Sql = LoadSql("entity_features.sql");
    private static readonly string BatchSql = LoadSql("entity_features_batch.sql");

    private readonly IClickHouseStore _store;

    public FeatureReader(IClickHouseStore store) => _store = store;

    /// <summary>
    /// How the last <see cref="ReadAsync"/> split: the query in ClickHouse (with its rows handed over as
    /// bytes) and the vectors built from them here, with the size of what was handed over.
    /// </summary>
    public (TimeSpan Query, TimeSpan Parse, long Bytes) LastRead { get; private set; }

    public async Task<List<EntityFeatures>> ReadAsync(DateTime asOf, DateTime activeSince, CancellationToken cancellationToken = default)
    {
        var t = Truncate(asOf);
        var started = Stopwatch.GetTimestamp();
        var bytes = await _store.QueryFormattedAsync(Sql, "RowBinaryWithNamesAndTypes", QueryParameters.Of(("t", t), ("since", Truncate(activeSince))), cancellationToken);
        var queried = Stopwatch.GetTimestamp();
        var list = FromRowBinary(bytes, t);
        LastRead = (Stopwatch.GetElapsedTime(started, queried), Stopwatch.GetElapsedTime(queried), bytes.LongLength);
        return list;
    }

    /// <summary>
    /// The rows of entity_features.sql as RowBinaryWithNamesAndTypes: entity_kind and entity (String),
    /// then Float64 figures, found by name. Nothing is boxed and nothing is made per row but the
    /// entity's name and its vector (the typed rows of <see cref="QueryResult"/> were an object per figure).
    /// </summary>
    internal static List<EntityFeatures> FromRowBinary(ReadOnlySpan<byte> data, DateTime asOf)
    {
        if (data.IsEmpty)
        {
            return [];
        }

        var p = 0;
        var n = (int)VarUInt(data, ref p);
        var names = new string[n];
        for (var i = 0; i < n; i++)
        {
            names[i] = Encoding.UTF8.GetString(Bytes(data, ref p));
        }

        for (var i = 0; i < n; i++)
        {
            var type = Encoding.UTF8.GetString(Bytes(data, ref p));
            if (type != (i < 2 ? "String" : names[i] == PerMinute.Column ? PerMinute.Type : "Float64"))
            {
                throw new InvalidOperationException($"The feature query's column {names[i]} is {type}; entity_kind and entity are String, {PerMinute.Column} {PerMinute.Type}, every figure Float64.");
            }
        }

        if (n < 2 || names[0] != "entity_kind" || names[1] != "entity")
        {
            throw new InvalidOperationException("The feature query starts with entity_kind and entity.");
        }

        // Where each figure goes in the raw layout (-1: a column the vector does not use).
        var slot = new int[n];
        for (var i = 2; i < n; i++)
        {
            slot[i] = -1;
        }

        // The per-minute figures come as one column of (minute, events) rows, or as figures of their own.
        var perMinute = Array.IndexOf(names, PerMinute.Column, 2);
        var derived = perMinute < 0 ? [] : PerMinute.Figures.Select(f => FeatureSet.Raw.Names.ToList().IndexOf(f)).ToArray();
        for (var r = 0; r < FeatureSet.Raw.Count; r++)
        {
            var at = Array.IndexOf(names, FeatureSet.Raw.Names[r], 2);
            if (at < 0 && !derived.Contains(r))
            {
                throw new InvalidOperationException($"The feature query has no column '{FeatureSet.Raw.Names[r]}'.");
            }

            if (at >= 0)
            {
                slot[at] = r;
            }
        }

        var list = new List<EntityFeatures>();
        Span<double> raw = stackalloc double[FeatureSet.Raw.Count];
        var minutes = new PerMinute.Buffer();
        while (p < data.Length)
        {
            var kind = Kind(Bytes(data, ref p));
            var entity = Encoding.UTF8.GetString(Bytes(data, ref p));
            for (var i = 2; i < n; i++)
            {
                if (i == perMinute)
                {
                    var count = (int)VarUInt(data, ref p);
                    var rows = minutes.Rows(count);
                    for (var k = 0; k < count; k++)
                    {
                        rows[k] = (BinaryPrimitives.ReadUInt32LittleEndian(data[p..]), BinaryPrimitives.ReadUInt64LittleEndian(data[(p + 4)..]));
                        p += 12;
                    }

                    var (active, burstiness, intervalCv) = PerMinute.Derive(rows, minutes);
                    raw[derived[0]] = active;
                    raw[derived[1]] = burstiness;
                    raw[derived[2]] = intervalCv;
                    continue;
                }

                var value = BinaryPrimitives.ReadDoubleLittleEndian(data[p..]);
                p += 8;
                if (slot[i] >= 0)
                {
                    raw[slot[i]] = value;
                }
            }

            list.Add(FeatureSet.Build(kind, entity, asOf, raw));
        }

        return list;
    }

    /// <summary>
    /// The figures of the hour taken per minute: active minutes, burstiness (the per-minute events'
    /// standard deviation over their mean; 0 when there is none) and the regularity of the gaps between
    /// active minutes (their coefficient of variation, in seconds; 1, what random arrivals give, with
    /// fewer than two gaps). The query hands over each minute row with events (a minute may sit in
    /// several rows until its parts merge); here a minute's rows are added up first, as sumMap did in SQL.
    /// </summary>
    internal static class PerMinute
    {
        public const string Column = "events_per_minute";
        public const string Type = "Array(Tuple(UInt32, UInt64))";
        public static readonly string[] Figures = ["active_minutes_1h", "burstiness_1h", "interval_cv_1h"];

        /// <summary>
        /// The rows, minute totals and gaps of one entity, reused from row to row: a million entities
        /// a pass, each with a handful of minutes (issue 16: lists and LINQ per row cost ~3 µs).
        /// </summary>
        internal sealed class Buffer
        {
            private (uint Minute, ulong Events)[] _rows = new (uint, ulong)[64];
            private double[] _minutes = new double[64];
            private double[] _events = new double[64];
            private double[] _gaps = new double[64];

            public Span<(uint Minute, ulong Events)> Rows(int count)
            {
                if (_rows.Length < count)
                {
                    var size = Math.Max(count, 2 * _rows.Length);
                    (_rows, _minutes, _events, _gaps) = (new (uint, ulong)[size], new double[size], new double[size], new double[size]);
                }

                return _rows.AsSpan(0, count);
            }

            public Span<double> Minutes => _minutes;

            public Span<double> Events => _events;

            public Span<double> Gaps => _gaps;
        }

        /// <summary><paramref name="rows"/> sit in <paramref name="buffer"/> (<see cref="Buffer.Rows"/>); they are sorted in place.</summary>
        public static (double Active, double Burstiness, double IntervalCv) Derive(Span<(uint Minute, ulong Events)> rows, Buffer buffer)
        {
            rows.Sort();
            var minutes = buffer.Minutes;
            var events = buffer.Events;
            var count = 0;
            foreach (var (minute, e) in rows)
            {
                if (count > 0 && minutes[count - 1] == minute)
                {
                    events[count - 1] += e;
                }
                else
                {
                    minutes[count] = minute;
                    events[count] = e;
                    count++;
                }
            }

            var burstiness = CoefficientOfVariation(events[..count], 0);
            var gaps = buffer.Gaps[..Math.Max(0, count - 1)];
            for (var k = 1; k < count; k++)
            {
                gaps[k - 1] = minutes[k] - minutes[k - 1];
            }

            return (count, burstiness, gaps.Length >= 2 ? CoefficientOfVariation(gaps, 1) : 1);
        }

        // Population standard deviation over the mean; `otherwise` when that is not finite (no values, a
        // zero mean). Summed in order, one value after another, as Enumerable.Average and Sum did.
        private static double CoefficientOfVariation(ReadOnlySpan<double> values, double otherwise)
        {
            if (values.IsEmpty)
            {
                return otherwise;
            }

            double sum = 0;
            foreach (var v in values)
            {
                sum += v;
            }

            var mean = sum / values.Length;
            double squares = 0;
            foreach (var v in values)
            {
                squares += (v - mean) * (v - mean);
            }

            var cv = Math.Sqrt(squares / values.Length) / mean;
            return double.IsFinite(cv) ? cv : otherwise;
        }
    }

    private static EntityKind Kind(ReadOnlySpan<byte> text) =>
        text.SequenceEqual("user"u8) ? EntityKind.User
        : text.SequenceEqual("ip"u8) ? EntityKind.Ip
        : text.SequenceEqual("net"u8) ? EntityKind.Net
        : throw new InvalidOperationException($"Unknown entity kind '{Encoding.UTF8.GetString(text)}'.");

    private static ReadOnlySpan<byte> Bytes(ReadOnlySpan<byte> data, ref int p)
    {
        var length = (int)VarUInt(data, ref p);
        var bytes = data.Slice(p, length);
        p += length;
        return bytes;
    }

    private static ulong VarUInt(ReadOnlySpan<byte> data, ref int p)
    {
        ulong value = 0;
        for (var shift = 0; ; shift += 7)
        {
            var b = data[p++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
    }

    /// <summary>
    /// The features the scorer would compute at every point from <paramref name="from"/> to
    /// <paramref name="to"/> (both included, whole minutes) <paramref name="step"/> apart, for the
    /// entities active within <paramref name="lookback"/> before each point, in one query: the same
    /// values as <see cref="ReadAsync"/> at each point, at a fraction of the cost.
    /// </summary>
    public async Task<List<EntityFeatures>> ReadManyAsync(DateTime from, DateTime to, TimeSpan step, TimeSpan lookback, CancellationToken cancellationToken = default)
    {
        if (step < TimeSpan.FromMinutes(1) || step.Ticks % TimeSpan.TicksPerMinute != 0 || lookback.Ticks % TimeSpan.TicksPerMinute != 0 || lookback <= TimeSpan.Zero)
        {
            throw new ArgumentException("Points and lookbacks are whole minutes.");
        }

        var result = await _store.QueryAsync(BatchSql, QueryParameters.Of(
            ("from", Truncate(from)), ("to", Truncate(to)), ("step", (uint)step.TotalSeconds), ("lookback", (uint)lookback.TotalSeconds)), cancellationToken);
        return FeatureSet.FromRows(result, null);
    }

    /// <summary>
    /// The time features are really computed as of: the start of the minute. The aggregates are per
    /// minute, so a minute counts only once it is over; that way no feature reads an event at or
    /// after the scoring time, whether it is read live or replayed over recorded history.
    /// </summary>
    public static DateTime Truncate(DateTime t) => new(t.Ticks - (t.Ticks % TimeSpan.TicksPerMinute), DateTimeKind.Utc);

    internal static string LoadSql(string name)
    {
        using var stream = typeof(FeatureReader).Assembly.GetManifestResourceStream("Analytics.Detection.Features." + name)
            ?? throw new InvalidOperationException($"Embedded SQL {name} is missing.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
