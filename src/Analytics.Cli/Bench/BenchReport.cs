using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Analytics.Cli.Bench;

/// <summary>Named figures with units, printed as aligned text or one JSON object.</summary>
internal sealed class BenchReport
{
    private readonly List<(string Key, double Value, string Unit, string Label)> _figures = [];
    private readonly Dictionary<string, string> _context = [];

    public BenchReport(string name) => Name = name;

    public string Name { get; }

    public void Context(string key, string value) => _context[key] = value;

    public void Add(string key, double value, string unit, string label) => _figures.Add((key, value, unit, label));

    public async Task WriteAsync(TextWriter output, bool json)
    {
        if (json)
        {
            var obj = new JsonObject { ["benchmark"] = Name };
            foreach (var (k, v) in _context)
            {
                obj[k] = v;
            }

            foreach (var f in _figures)
            {
                obj[f.Key] = Math.Round(f.Value, 4);
            }

            await output.WriteLineAsync(obj.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            return;
        }

        await output.WriteLineAsync($"bench {Name}");
        foreach (var (k, v) in _context)
        {
            await output.WriteLineAsync($"  {k,-28} {v}");
        }

        foreach (var f in _figures)
        {
            await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  {f.Label,-44} {Format(f.Value),14} {f.Unit}"));
        }
    }

    private static string Format(double v) =>
        Math.Abs(v) >= 100 ? v.ToString("N0", CultureInfo.InvariantCulture) : v.ToString("0.###", CultureInfo.InvariantCulture);
}
