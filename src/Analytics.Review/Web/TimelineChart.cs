using System.Globalization;
using System.Text;
using Analytics.Review.Evidence;

namespace Analytics.Review.Web;

/// <summary>
/// The per-minute timeline as server-rendered SVG: one line per measure, a y grid, time ticks every
/// 30 minutes, and an invisible band per minute whose tooltip gives that minute's figures. No script,
/// no library; presentation attributes only, so the page's CSP (no inline styles) holds.
/// </summary>
internal static class TimelineChart
{
    private const int Width = 960;
    private const int Height = 280;
    private const int Left = 48;
    private const int Right = 12;
    private const int Top = 14;
    private const int Bottom = 46;

    public static readonly (string Name, string Color, Func<MinutePoint, long> Value)[] Series =
    [
        ("messages", "#1f6fb4", p => p.Messages),
        ("recipients", "#2a9d3a", p => p.Recipients),
        ("AUTH failures", "#d1352b", p => p.AuthFailures),
        ("rejected RCPTs", "#e07b00", p => p.RejectedRcpts),
    ];

    public static string Render(DateTime from, DateTime to, IReadOnlyList<MinutePoint> points)
    {
        var inv = CultureInfo.InvariantCulture;
        var minutes = Math.Max(1, (int)(to - from).TotalMinutes);
        var byMinute = points.ToDictionary(p => p.Minute);
        var filled = Enumerable.Range(0, minutes).Select(i => from.AddMinutes(i))
            .Select(m => byMinute.GetValueOrDefault(m) ?? new MinutePoint(m, 0, 0, 0, 0)).ToList();
        var max = Math.Max(1, filled.Max(p => Series.Max(s => s.Value(p))));
        var yMax = NiceCeiling(max);
        var plotW = Width - Left - Right;
        var plotH = Height - Top - Bottom;
        double X(int i) => Left + (plotW * (i + 0.5) / minutes);
        double Y(long v) => Top + plotH - (plotH * (double)v / yMax);

        var svg = new StringBuilder();
        svg.Append(inv, $"<svg class=\"chart\" id=\"timeline\" viewBox=\"0 0 {Width} {Height}\" role=\"img\" aria-label=\"Per-minute activity from {from:HH:mm} to {to:HH:mm} UTC\" xmlns=\"http://www.w3.org/2000/svg\">");
        svg.Append("<title>Per-minute activity (UTC)</title>");
        for (var g = 0; g <= 4; g++)
        {
            var v = yMax * g / 4;
            var y = Y(v);
            svg.Append(inv, $"<line x1=\"{Left}\" x2=\"{Width - Right}\" y1=\"{y:0.#}\" y2=\"{y:0.#}\" stroke=\"#ddd\" stroke-width=\"1\"/>");
            svg.Append(inv, $"<text x=\"{Left - 6}\" y=\"{y + 4:0.#}\" text-anchor=\"end\" font-size=\"11\" fill=\"#555\">{v}</text>");
        }

        for (var i = 0; i < minutes; i++)
        {
            var t = from.AddMinutes(i);
            if (t.Minute % 30 == 0)
            {
                svg.Append(inv, $"<line x1=\"{X(i):0.#}\" x2=\"{X(i):0.#}\" y1=\"{Top}\" y2=\"{Top + plotH}\" stroke=\"#eee\" stroke-width=\"1\"/>");
                svg.Append(inv, $"<text x=\"{X(i):0.#}\" y=\"{Top + plotH + 16}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">{t:HH:mm}</text>");
            }
        }

        svg.Append(inv, $"<line x1=\"{Left}\" x2=\"{Width - Right}\" y1=\"{Top + plotH}\" y2=\"{Top + plotH}\" stroke=\"#888\" stroke-width=\"1\"/>");
        foreach (var (name, color, value) in Series)
        {
            svg.Append(inv, $"<polyline class=\"series\" data-series=\"{name}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" stroke-linejoin=\"round\" points=\"");
            for (var i = 0; i < filled.Count; i++)
            {
                svg.Append(inv, $"{X(i):0.#},{Y(value(filled[i])):0.#} ");
            }

            svg.Append("\"/>");
        }

        // Hover bands: the browser's own tooltip shows the minute's figures.
        var band = (double)plotW / minutes;
        for (var i = 0; i < filled.Count; i++)
        {
            var p = filled[i];
            if (Series.All(s => s.Value(p) == 0))
            {
                continue;
            }

            svg.Append(inv, $"<rect x=\"{X(i) - (band / 2):0.##}\" y=\"{Top}\" width=\"{band:0.##}\" height=\"{plotH}\" fill=\"transparent\"><title>{p.Minute:HH:mm} UTC: {p.Messages} messages, {p.Recipients} recipients, {p.AuthFailures} AUTH failures, {p.RejectedRcpts} rejected RCPTs</title></rect>");
        }

        var lx = Left;
        foreach (var (name, color, _) in Series)
        {
            svg.Append(inv, $"<rect x=\"{lx}\" y=\"{Height - 16}\" width=\"14\" height=\"4\" fill=\"{color}\"/>");
            svg.Append(inv, $"<text x=\"{lx + 18}\" y=\"{Height - 11}\" font-size=\"12\" fill=\"#333\">{name}</text>");
            lx += 40 + (name.Length * 7);
        }

        svg.Append(inv, $"<text x=\"{Width - Right}\" y=\"{Height - 11}\" text-anchor=\"end\" font-size=\"11\" fill=\"#777\">{from:yyyy-MM-dd HH:mm} – {to:HH:mm} UTC, per minute</text>");
        svg.Append("</svg>");
        return svg.ToString();
    }

    private static long NiceCeiling(long max)
    {
        var magnitude = (long)Math.Pow(10, Math.Floor(Math.Log10(max)));
        foreach (var step in new long[] { 1, 2, 4, 5, 10 })
        {
            if (step * magnitude >= max && (step * magnitude) % 4 == 0)
            {
                return step * magnitude;
            }
        }

        return 4 * (long)Math.Ceiling(max / 4.0);
    }
}
