using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace Analytics.Cli.Hosting;

/// <summary>
/// A small Prometheus registry, text exposition format 0.0.4. Counters are labelled series that only
/// go up and are bumped on hot paths without a lock (one <see cref="Interlocked"/> add per event);
/// everything else (sink, scorer, limits) is read when the scrape happens, through collectors, so the
/// source of truth stays with its owner and nothing is copied on a timer.
/// </summary>
internal sealed class MetricsRegistry
{
    // Families in registration order, so the exposition is stable from scrape to scrape.
    private readonly List<Family> _families = [];
    private readonly List<Func<CancellationToken, Task<IEnumerable<Sample>>>> _collectors = [];
    private readonly Lock _gate = new();

    public Counter Counter(string name, string help, params string[] labelNames)
    {
        var counter = new Counter(name, help, labelNames);
        lock (_gate)
        {
            _families.Add(counter);
        }

        return counter;
    }

    /// <summary>
    /// Declares a family whose samples a collector produces at scrape time. The collector may run I/O;
    /// it must be quick and must not throw for an absent source (return nothing instead).
    /// </summary>
    public void Collected(string name, string type, string help)
    {
        lock (_gate)
        {
            _families.Add(new Family(name, type, help));
        }
    }

    public void AddCollector(Func<CancellationToken, Task<IEnumerable<Sample>>> collector)
    {
        lock (_gate)
        {
            _collectors.Add(collector);
        }
    }

    /// <summary>The whole exposition: every family's HELP and TYPE, then its samples.</summary>
    public async Task<string> ScrapeAsync(CancellationToken cancellationToken)
    {
        List<Family> families;
        List<Func<CancellationToken, Task<IEnumerable<Sample>>>> collectors;
        lock (_gate)
        {
            families = [.. _families];
            collectors = [.. _collectors];
        }

        var collected = new List<Sample>();
        foreach (var collector in collectors)
        {
            collected.AddRange(await collector(cancellationToken));
        }

        var byName = collected.ToLookup(s => s.Name);
        var text = new StringBuilder();
        foreach (var family in families)
        {
            text.Append("# HELP ").Append(family.Name).Append(' ').Append(EscapeHelp(family.Help)).Append('\n');
            text.Append("# TYPE ").Append(family.Name).Append(' ').Append(family.Type).Append('\n');
            var samples = family is Counter counter ? counter.Samples() : byName[family.Name];
            foreach (var sample in samples)
            {
                Write(text, sample);
            }
        }

        return text.ToString();
    }

    private static void Write(StringBuilder text, Sample sample)
    {
        text.Append(sample.Name);
        if (sample.Labels.Count > 0)
        {
            text.Append('{');
            for (var i = 0; i < sample.Labels.Count; i++)
            {
                if (i > 0)
                {
                    text.Append(',');
                }

                text.Append(sample.Labels[i].Name).Append("=\"").Append(EscapeLabel(sample.Labels[i].Value)).Append('"');
            }

            text.Append('}');
        }

        text.Append(' ').Append(Format(sample.Value)).Append('\n');
    }

    private static string Format(double value) => value switch
    {
        double.PositiveInfinity => "+Inf",
        double.NegativeInfinity => "-Inf",
        double.NaN => "NaN",
        _ => value.ToString("R", CultureInfo.InvariantCulture),
    };

    private static string EscapeHelp(string help) => help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string EscapeLabel(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}

/// <summary>One family: a name, a Prometheus type and a line of help.</summary>
internal class Family
{
    public Family(string name, string type, string help)
    {
        Name = name;
        Type = type;
        Help = help;
    }

    public string Name { get; }

    public string Type { get; }

    public string Help { get; }
}

/// <summary>One line of the exposition.</summary>
internal sealed record Sample(string Name, IReadOnlyList<(string Name, string Value)> Labels, double Value)
{
    public static Sample Of(string name, double value, params (string Name, string Value)[] labels) => new(name, labels, value);
}

/// <summary>A labelled counter. Label values come from small closed sets (event kinds, reply codes, classes).</summary>
internal sealed class Counter : Family
{
    private readonly string[] _labelNames;

    // A cell per label combination; the array holds one long so Interlocked can add to it in place.
    private readonly ConcurrentDictionary<string, (string[] Values, long[] Cell)> _cells = new(StringComparer.Ordinal);

    public Counter(string name, string help, string[] labelNames)
        : base(name, "counter", help) => _labelNames = labelNames;

    public void Inc(params string[] labelValues) => Add(1, labelValues);

    public void Add(long amount, params string[] labelValues)
    {
        if (labelValues.Length != _labelNames.Length)
        {
            throw new ArgumentException($"{Name} takes {_labelNames.Length} label values.", nameof(labelValues));
        }

        var key = string.Join('\u001f', labelValues);
        var cell = _cells.GetOrAdd(key, static (_, values) => ((string[])values.Clone(), new long[1]), labelValues).Cell;
        Interlocked.Add(ref cell[0], amount);
    }

    public long Value(params string[] labelValues) =>
        _cells.TryGetValue(string.Join('\u001f', labelValues), out var c) ? Interlocked.Read(ref c.Cell[0]) : 0;

    public IEnumerable<Sample> Samples() =>
        _cells.Values
            .OrderBy(c => string.Join('\u001f', c.Values), StringComparer.Ordinal)
            .Select(c => new Sample(Name, _labelNames.Zip(c.Values, (n, v) => (n, v)).ToArray(), Interlocked.Read(ref c.Cell[0])));
}
