using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Analytics.Review.Tests;

/// <summary>An HttpClient with its own cookie jar that does not follow redirects, optionally from another loopback source address.</summary>
internal sealed partial class ReviewClient : IDisposable
{
    private ReviewClient(HttpClient http, CookieContainer cookies)
    {
        Http = http;
        Cookies = cookies;
    }

    public HttpClient Http { get; }

    public CookieContainer Cookies { get; }

    public static ReviewClient Create(ReviewServer server, IPAddress? source = null, bool useCookies = true)
    {
        var cookies = new CookieContainer();
        var handler = new SocketsHttpHandler { CookieContainer = cookies, AllowAutoRedirect = false, UseCookies = useCookies };
        if (source is not null)
        {
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                socket.Bind(new IPEndPoint(source, 0));
                await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                return new NetworkStream(socket, ownsSocket: true);
            };
        }

        return new ReviewClient(new HttpClient(handler) { BaseAddress = server.BaseAddress }, cookies);
    }

    /// <summary>The antiforgery token of a page's first form.</summary>
    public static string Csrf(string html) => CsrfField().Match(html) is { Success: true } m ? WebUtility.HtmlDecode(m.Groups[1].Value)
        : throw new InvalidOperationException("The page has no __csrf field.");

    public async Task<HttpResponseMessage> LoginAsync(string name, string password, string returnUrl = "") =>
        await Http.PostAsync(new Uri("/login", UriKind.Relative), await LoginFormAsync(name, password, returnUrl));

    /// <summary>The login form, filled in with this client's antiforgery token, ready to post (so that posts can race).</summary>
    public async Task<FormUrlEncodedContent> LoginFormAsync(string name, string password, string returnUrl = "")
    {
        var page = await Http.GetStringAsync(new Uri("/login", UriKind.Relative));
        return new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["name"] = name,
            ["password"] = password,
            ["__csrf"] = Csrf(page),
            ["returnUrl"] = returnUrl,
        });
    }

    public async Task<string> PageAsync(string path)
    {
        using var response = await Http.GetAsync(new Uri(path, UriKind.Relative));
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadAsStringAsync();
    }

    public void Dispose() => Http.Dispose();

    [GeneratedRegex("name=\"__csrf\" value=\"([^\"]+)\"")]
    private static partial Regex CsrfField();
}
