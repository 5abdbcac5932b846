using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Analytics.Simulation.Attacks;

/// <summary>Who a client works for.</summary>
public enum Side
{
    Attack,
    Legit,
}

/// <summary>One reply a client saw: what it sent (step, and the user or recipient it concerned) and the code.</summary>
public sealed record ClientRecord(DateTimeOffset At, Side Side, string Ip, string Step, string Subject, int Code);

/// <summary>Every reply every client saw, in arrival order (thread-safe).</summary>
public sealed class ClientLog
{
    /// <summary>The code recorded for a failure on the client's side (TLS handshake, timeout): no reply was involved.</summary>
    public const int ClientFailure = -1;

    private readonly ConcurrentQueue<ClientRecord> _records = new();
    private readonly TimeProvider _time;

    public ClientLog(TimeProvider time) => _time = time;

    public void Add(Side side, string ip, string step, string subject, int code) =>
        _records.Enqueue(new ClientRecord(_time.GetUtcNow(), side, ip, step, subject, code));

    public IReadOnlyList<ClientRecord> All => [.. _records.OrderBy(r => r.At)];

    public IEnumerable<ClientRecord> Of(Side side) => All.Where(r => r.Side == side);
}

/// <summary>A figure and, when it has one, its target (met when the value is at most the target).</summary>
public sealed record Figure(string Key, string Label, double? Value, double? Target, string Unit = "")
{
    public bool? Pass => Target is { } t ? Value is { } v && v <= t : null;
}

/// <summary>One run's figures, printed as a table or one JSON object.</summary>
public sealed class ScenarioReport
{
    private readonly List<Figure> _figures = [];
    private readonly List<(string Key, string Value)> _context = [];

    public ScenarioReport(string scenario) => Scenario = scenario;

    public string Scenario { get; }

    public IReadOnlyList<Figure> Figures => _figures;

    public bool AllPass => _figures.All(f => f.Pass != false);

    public void Context(string key, string value) => _context.Add((key, value));

    public void Add(string key, string label, double? value, double? target = null, string unit = "") => _figures.Add(new Figure(key, label, value, target, unit));

    public async Task WriteAsync(TextWriter output, bool json)
    {
        if (json)
        {
            var figures = new JsonObject();
            foreach (var f in _figures)
            {
                var node = new JsonObject { ["value"] = f.Value is { } v && double.IsFinite(v) ? Math.Round(v, 3) : null, ["label"] = f.Label };
                if (f.Target is { } t)
                {
                    node["target"] = t;
                    node["pass"] = f.Pass;
                }

                if (f.Unit.Length > 0)
                {
                    node["unit"] = f.Unit;
                }

                figures[f.Key] = node;
            }

            var context = new JsonObject();
            foreach (var (k, v) in _context)
            {
                context[k] = v;
            }

            var obj = new JsonObject { ["scenario"] = Scenario, ["pass"] = AllPass, ["context"] = context, ["figures"] = figures };
            await output.WriteLineAsync(obj.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            return;
        }

        await output.WriteLineAsync($"scenario {Scenario}");
        foreach (var (k, v) in _context)
        {
            await output.WriteLineAsync($"  {k,-22} {v}");
        }

        await output.WriteLineAsync();
        await output.WriteLineAsync($"  {"figure",-58} {"value",10}  {"target",8}  result");
        await output.WriteLineAsync("  " + new string('-', 88));
        foreach (var f in _figures)
        {
            var target = f.Target is { } t ? "≤ " + Format(t) : "";
            var result = f.Pass switch { true => "pass", false => "FAIL", null => "" };
            await output.WriteLineAsync($"  {f.Label + (f.Unit.Length > 0 ? " (" + f.Unit + ")" : ""),-58} {Format(f.Value),10}  {target,8}  {result}");
        }

        await output.WriteLineAsync();
        await output.WriteLineAsync(AllPass ? "  all targets met" : "  TARGETS MISSED: " + string.Join(", ", _figures.Where(f => f.Pass == false).Select(f => f.Key)));
    }

    internal static string Format(double? value) => value switch
    {
        null => "n/a",
        { } v when double.IsPositiveInfinity(v) => "never",
        { } v when Math.Abs(v - Math.Round(v)) < 1e-9 => v.ToString("0", CultureInfo.InvariantCulture),
        { } v => v.ToString("0.###", CultureInfo.InvariantCulture),
    };
}

/// <summary>The same scenario run several times (one seed after another): each figure's spread over the runs.</summary>
public sealed class ScenarioSpread
{
    private readonly IReadOnlyList<ScenarioReport> _runs;
    private readonly IReadOnlyList<int> _seeds;

    public ScenarioSpread(string scenario, IReadOnlyList<ScenarioReport> runs, IReadOnlyList<int> seeds)
    {
        Scenario = scenario;
        _runs = runs;
        _seeds = seeds;
    }

    public string Scenario { get; }

    /// <summary>Every run met every target.</summary>
    public bool AllPass => _runs.All(r => r.AllPass);

    private IEnumerable<(string Key, string Label, string Unit, double? Target, List<double?> Values, int Passed)> Rows() =>
        _runs.SelectMany(r => r.Figures).Select(f => f.Key).Distinct(StringComparer.Ordinal).Select(key =>
        {
            var figures = _runs.Select(r => r.Figures.FirstOrDefault(f => f.Key == key)).ToList();
            var first = figures.First(f => f is not null)!;
            return (key, first.Label, first.Unit, first.Target, figures.Select(f => f?.Value).ToList(), figures.Count(f => f?.Pass != false));
        });

    public async Task WriteAsync(TextWriter output, bool json)
    {
        if (json)
        {
            var figures = new JsonObject();
            foreach (var (key, label, unit, target, values, passed) in Rows())
            {
                var finite = values.Where(v => v is { } x && double.IsFinite(x)).Select(v => v!.Value).Order().ToList();
                var node = new JsonObject
                {
                    ["label"] = label,
                    ["values"] = new JsonArray([.. values.Select(v => v is { } x && double.IsFinite(x) ? JsonValue.Create(Math.Round(x, 3)) : null)]),
                    ["min"] = finite.Count == 0 ? null : Math.Round(finite[0], 3),
                    ["median"] = finite.Count == 0 ? null : Math.Round(finite[finite.Count / 2], 3),
                    ["max"] = finite.Count == 0 ? null : Math.Round(finite[^1], 3),
                };
                if (target is { } t)
                {
                    node["target"] = t;
                    node["runs_passed"] = passed;
                }

                if (unit.Length > 0)
                {
                    node["unit"] = unit;
                }

                figures[key] = node;
            }

            var obj = new JsonObject
            {
                ["scenario"] = Scenario,
                ["runs"] = _runs.Count,
                ["seeds"] = new JsonArray([.. _seeds.Select(s => JsonValue.Create(s))]),
                ["pass"] = AllPass,
                ["figures"] = figures,
            };
            await output.WriteLineAsync(obj.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            return;
        }

        await output.WriteLineAsync($"scenario {Scenario}: {_runs.Count} runs (seeds {string.Join(", ", _seeds)})");
        await output.WriteLineAsync();
        await output.WriteLineAsync($"  {"figure",-58} {"min",8} {"median",8} {"max",8}  {"target",8}  runs met");
        await output.WriteLineAsync("  " + new string('-', 104));
        foreach (var (_, label, unit, target, values, passed) in Rows())
        {
            var sorted = values.Select(v => v ?? double.NaN).Order().ToList();
            string F(double v) => double.IsNaN(v) ? "n/a" : ScenarioReport.Format(v);
            await output.WriteLineAsync($"  {label + (unit.Length > 0 ? " (" + unit + ")" : ""),-58} {F(sorted[0]),8} {F(sorted[sorted.Count / 2]),8} {F(sorted[^1]),8}  {(target is { } t ? "≤ " + ScenarioReport.Format(t) : ""),8}  {(target is null ? "" : $"{passed}/{_runs.Count}")}");
        }

        await output.WriteLineAsync();
        await output.WriteLineAsync(AllPass ? "  every run met every target" : "  some runs missed a target");
    }
}

