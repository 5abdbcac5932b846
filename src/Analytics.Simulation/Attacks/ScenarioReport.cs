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
