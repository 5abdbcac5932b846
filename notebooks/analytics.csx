// Shared by the notebooks: run the analytics CLI, read query results, draw simple SVG charts.
// Loaded with #load "analytics.csx". Needs nothing but the repository checkout (no NuGet at run time).
#nullable enable
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.DotNet.Interactive.Formatting;

public static class Lab
{
    /// <summary>The repository root (notebooks/..) and the data directory the notebooks share.</summary>
    public static string Root { get; } = FindRoot();
    public static string Data { get; } = Environment.GetEnvironmentVariable("ANALYTICS_NB_DATA") is { Length: > 0 } d ? d : Path.Combine(Root, "artifacts", "notebook-data");
    public static string ModelDir => Path.Combine(Data, "model");

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Analytics.sln"))) return dir.FullName;
        throw new InvalidOperationException("run the notebooks from the repository (Analytics.sln not found above " + Directory.GetCurrentDirectory() + ")");
    }

    /// <summary>Runs ./analytics with the shared data directory; throws with its stderr when it fails.</summary>
    public static string Cli(params string[] args)
    {
        // ANALYTICS_NB_CLI names a built analytics.dll (the test suite passes its own); else ./analytics builds as needed.
        var dll = Environment.GetEnvironmentVariable("ANALYTICS_NB_CLI");
        var info = new ProcessStartInfo(string.IsNullOrEmpty(dll) ? Path.Combine(Root, "analytics") : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Root };
        if (!string.IsNullOrEmpty(dll)) info.ArgumentList.Add(dll);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.ArgumentList.Add("--data"); info.ArgumentList.Add(Data);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"analytics {string.Join(' ', args)} exited {p.ExitCode}: {stderr}");
        return stdout.Result;
    }

    /// <summary>Makes the small simulated dataset once (a few seconds); later calls reuse it.</summary>
    public static string EnsureData()
    {
        if (File.Exists(Path.Combine(Data, ".simulated"))) return "reusing " + Data;
        Directory.CreateDirectory(Data);
        var line = Cli("simulate", "--scenario", "small", "--seed", "7").Trim();
        File.WriteAllText(Path.Combine(Data, ".simulated"), line);
        return line;
    }

    /// <summary>Rows of a query, as dictionaries of JSON values.</summary>
    public static List<Dictionary<string, JsonElement>> Sql(string query) =>
        Cli("sql", query, "-f", "JSONEachRow").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(l)!).ToList();

    public static string Text(JsonElement e) => e.ValueKind == JsonValueKind.String ? e.GetString()! : e.ToString();

    /// <summary>An HTML table of rows (first <paramref name="max"/>).</summary>
    public static string Table(IEnumerable<Dictionary<string, JsonElement>> rows, int max = 20)
    {
        var list = rows.Take(max).ToList();
        if (list.Count == 0) return "<p><i>no rows</i></p>";
        var sb = new StringBuilder("<table><tr>");
        foreach (var k in list[0].Keys) sb.Append("<th>").Append(System.Net.WebUtility.HtmlEncode(k)).Append("</th>");
        sb.Append("</tr>");
        foreach (var r in list)
        {
            sb.Append("<tr>");
            foreach (var v in r.Values) sb.Append("<td>").Append(System.Net.WebUtility.HtmlEncode(Text(v))).Append("</td>");
            sb.Append("</tr>");
        }
        return sb.Append("</table>").ToString();
    }

    static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"];

    /// <summary>Line chart: one polyline per series, x and y scaled to the data. Returns SVG markup.</summary>
    public static string Lines(string title, IReadOnlyDictionary<string, IReadOnlyList<(double X, double Y)>> series, string xLabel = "", string yLabel = "", double width = 640, double height = 300)
    {
        var pts = series.Values.SelectMany(s => s).ToList();
        if (pts.Count == 0) return $"<p><i>{title}: no data</i></p>";
        double x0 = pts.Min(p => p.X), x1 = pts.Max(p => p.X), y0 = Math.Min(0, pts.Min(p => p.Y)), y1 = pts.Max(p => p.Y);
        if (x1 == x0) x1 = x0 + 1; if (y1 == y0) y1 = y0 + 1;
        const double l = 50, r = 130, t = 25, b = 35;
        string X(double x) => (l + (x - x0) / (x1 - x0) * (width - l - r)).ToString("0.0", CultureInfo.InvariantCulture);
        string Y(double y) => (height - b - (y - y0) / (y1 - y0) * (height - t - b)).ToString("0.0", CultureInfo.InvariantCulture);
        var sb = new StringBuilder($"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-family='sans-serif' font-size='11'>");
        sb.Append($"<text x='{l}' y='15' font-size='13'>{title}</text>");
        sb.Append($"<line x1='{l}' y1='{height - b}' x2='{width - r}' y2='{height - b}' stroke='#888'/><line x1='{l}' y1='{t}' x2='{l}' y2='{height - b}' stroke='#888'/>");
        sb.Append($"<text x='{l}' y='{height - 5}'>{x0.ToString("0.##", CultureInfo.InvariantCulture)}</text><text x='{width - r - 30}' y='{height - 5}'>{x1.ToString("0.##", CultureInfo.InvariantCulture)} {xLabel}</text>");
        sb.Append($"<text x='2' y='{t + 5}'>{y1.ToString("0.##", CultureInfo.InvariantCulture)}</text><text x='2' y='{height - b}'>{y0.ToString("0.##", CultureInfo.InvariantCulture)}</text><text x='2' y='{height / 2}'>{yLabel}</text>");
        var i = 0;
        foreach (var (name, s) in series)
        {
            var color = Palette[i % Palette.Length];
            sb.Append($"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{string.Join(" ", s.OrderBy(p => p.X).Select(p => X(p.X) + "," + Y(p.Y)))}'/>");
            sb.Append($"<text x='{width - r + 8}' y='{t + 14 * i + 10}' fill='{color}'>{System.Net.WebUtility.HtmlEncode(name)}</text>");
            i++;
        }
        return sb.Append("</svg>").ToString();
    }

    /// <summary>Horizontal bar chart. Returns SVG markup.</summary>
    public static string Bars(string title, IEnumerable<(string Label, double Value)> bars, double width = 640)
    {
        var list = bars.ToList();
        var max = Math.Max(1e-9, list.Select(b => b.Value).DefaultIfEmpty(0).Max());
        var height = 30 + 18 * list.Count;
        var sb = new StringBuilder($"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-family='sans-serif' font-size='11'><text x='0' y='15' font-size='13'>{title}</text>");
        for (var i = 0; i < list.Count; i++)
        {
            var w = list[i].Value / max * (width - 260);
            var y = 25 + 18 * i;
            sb.Append($"<text x='0' y='{y + 12}'>{System.Net.WebUtility.HtmlEncode(list[i].Label)}</text>");
            sb.Append($"<rect x='180' y='{y}' width='{w.ToString("0.0", CultureInfo.InvariantCulture)}' height='14' fill='{Palette[0]}'/>");
            sb.Append($"<text x='{(185 + w).ToString("0.0", CultureInfo.InvariantCulture)}' y='{y + 12}'>{list[i].Value.ToString("0.###", CultureInfo.InvariantCulture)}</text>");
        }
        return sb.Append("</svg>").ToString();
    }

    /// <summary>Shows HTML/SVG markup in the notebook output.</summary>
    public static void Show(string html) => html.DisplayAs("text/html");
}

// Script-level extension methods (a script's classes are nested, and extension methods cannot live in them).
static double Num(this JsonElement e) => e.ValueKind == JsonValueKind.String ? double.Parse(e.GetString()!, CultureInfo.InvariantCulture) : e.GetDouble();
static string Str(this JsonElement e) => Lab.Text(e);
