using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using Analytics.Events;

namespace Analytics.Submission;

/// <summary>An endpoint the listener is bound to (with the real port when port 0 was asked for).</summary>
public sealed record ListenerEndpoint(ListenerRole Role, IPEndPoint EndPoint, bool ImplicitTls)
{
    /// <summary>Parses <c>HOST:PORT</c>, <c>[v6]:PORT</c> or a bare port (all interfaces); HOST is an IP address, <c>*</c> or <c>localhost</c>.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out IPEndPoint? endPoint)
    {
        endPoint = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        text = text.Trim();
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var bare))
        {
            text = "0.0.0.0:" + bare.ToString(CultureInfo.InvariantCulture);
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port > 65535)
        {
            return false;
        }

        var host = text[..colon].Trim('[', ']');
        IPAddress? address = host switch
        {
            "*" => IPAddress.Any,
            "localhost" => IPAddress.Loopback,
            _ => IPAddress.TryParse(host, out var parsed) ? parsed : null,
        };
        if (address is null)
        {
            return false;
        }

        endPoint = new IPEndPoint(address, port);
        return true;
    }

    public static IPEndPoint Parse(string text) =>
        TryParse(text, out var endPoint) ? endPoint : throw new FormatException($"'{text}' is not HOST:PORT.");

    public override string ToString() => $"{Role.ToString().ToLowerInvariant()}{(ImplicitTls ? "+tls" : "")} {EndPoint}";
}
