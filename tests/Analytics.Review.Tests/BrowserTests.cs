using Analytics.Limits;
using Analytics.Store;
using Microsoft.Playwright;
using Xunit;

namespace Analytics.Review.Tests;

/// <summary>
/// The console in the system Chromium, headless, driven by Playwright: an analyst logs in, finds an
/// account flagged by the simulated harvest, opens it and dismisses it with a reason; the limit book
/// then holds an allowlist override and the audit trail the decision. Screenshots of the queue and the
/// entity page go to the test output directory.
/// </summary>
public sealed class BrowserTests
{
    private const string Chromium = "/usr/bin/chromium";
    private readonly ReviewServer _server;

    public BrowserTests(ReviewServer server) => _server = server;

    [Fact]
    public async Task Analyst_FindsTheHarvester_OpensIt_AndDismissesItWithAReason()
    {
        if (!File.Exists(Chromium))
        {
            Assert.Skip($"{Chromium} is not installed (apt-get install chromium; .ci/run installs it).");
        }

        var ct = TestContext.Current.CancellationToken;
        var flagged = await _server.Store.QueryAsync("""
            SELECT toString(entity_kind), entity FROM verdicts
            WHERE flagged AND class = 'harvester' AND entity_kind IN ('user', 'ip') AND scored_at >= now64(3) - INTERVAL 23 HOUR
            ORDER BY score DESC, scored_at DESC LIMIT 1
            """, null, ct);
        Assert.True(flagged.Rows.Count == 1, "the simulated harvest must have been flagged by the scoring pass");
        var (kind, name) = ((string)flagged.Rows[0][0]!, (string)flagged.Rows[0][1]!);
        var entity = new EntityRef(EntityKinds.Parse(kind), name);
        var shots = Path.Combine(AppContext.BaseDirectory, "screenshots");
        Directory.CreateDirectory(shots);

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        });
        var context = await browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = _server.BaseAddress.ToString(), ViewportSize = new ViewportSize { Width = 1400, Height = 900 } });
        var page = await context.NewPageAsync();
        page.SetDefaultTimeout(15_000);

        // Not logged in: the queue sends us to the login page.
        await page.GotoAsync("/queue");
        Assert.Contains("/login", page.Url, StringComparison.Ordinal);
        await page.GetByLabel("Name").FillAsync("ana");
        await page.GetByLabel("Password").FillAsync(ReviewServer.AnalystPassword);
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).ClickAsync();

        // The login hashes the password (PBKDF2); in the suite the assembly's other test classes run
        // beside it, and once this wait ran past 15 s on two cores.
        await page.WaitForURLAsync("**/queue**", new() { Timeout = 60_000 });

        // Narrow the queue to harvesters (the filter applies on change).
        await page.Locator("select[name=class]").SelectOptionAsync("harvester");
        await page.WaitForURLAsync("**class=harvester**");
        var row = page.Locator($"tr[data-entity=\"{kind}:{name}\"]");
        await row.WaitForAsync();
        Assert.Contains("harvester", await row.InnerTextAsync(), StringComparison.Ordinal);
        var queueShot = Path.Combine(shots, "queue.png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = queueShot, FullPage = true });

        await row.Locator("a.entity").ClickAsync();
        await page.WaitForURLAsync("**/entity?**");
        Assert.Equal(4, await page.Locator("#timeline polyline.series").CountAsync());
        Assert.True(await page.Locator("ul.reasons li").CountAsync() > 0, "the verdict's reasons are shown");
        Assert.True(await page.Locator("details.session").CountAsync() > 0, "recent sessions are shown");
        var entityShot = Path.Combine(shots, "entity.png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = entityShot, FullPage = true });

        // Dismiss as a false positive, allowlisted for 7 days.
        const string reason = "Known partner running an address-book sync; confirmed by phone";
        var dismiss = page.Locator("#dismiss-form");
        await dismiss.Locator("input[name=allowlistDays]").FillAsync("7");
        await dismiss.Locator("textarea[name=reason]").FillAsync(reason);
        await dismiss.GetByRole(AriaRole.Button, new() { Name = "Dismiss" }).ClickAsync();
        await page.WaitForURLAsync("**done=dismiss**");
        Assert.Equal("dismissed", (await page.Locator("#status").InnerTextAsync()).Trim());
        Assert.Contains(reason, await page.Locator("#audit").InnerTextAsync(), StringComparison.Ordinal);
        Assert.Equal("override", await page.Locator("#limit").GetAttributeAsync("data-source"));
        var afterShot = Path.Combine(shots, "entity-dismissed.png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = afterShot, FullPage = true });

        // The limit book has the allowlist override now, and the audit trail the decision.
        var limit = _server.Limits.Current(entity);
        Assert.Equal(LimitSource.Override, limit.Source);
        Assert.Equal(LimitLevel.Normal, limit.Level);
        Assert.False(limit.Blocked);
        Assert.Equal("ana", limit.SetBy);
        Assert.InRange(limit.ExpiresAt!.Value, DateTime.UtcNow.AddDays(6.9), DateTime.UtcNow.AddDays(7.1));
        var audit = await _server.Store.QueryAsync(
            "SELECT reviewer, toString(action), reason FROM review_actions WHERE entity_kind = {k:String} AND entity = {e:String}",
            QueryParameters.Of(("k", kind), ("e", name)), ct);
        Assert.Equal(["ana", "dismiss", reason], audit.Rows.Single().Select(x => (string)x!));
        var label = await _server.Store.QueryAsync(
            "SELECT class FROM labels FINAL WHERE entity_kind = {k:String} AND entity = {e:String} AND source = 'review'",
            QueryParameters.Of(("k", kind), ("e", name)), ct);
        Assert.Equal("benign", label.Scalar<string>());

        foreach (var shot in new[] { queueShot, entityShot, afterShot })
        {
            Assert.True(new FileInfo(shot).Length > 10_000, shot);
            TestContext.Current.TestOutputHelper?.WriteLine("screenshot: " + shot);
            TestContext.Current.AddAttachment(Path.GetFileName(shot), shot);
        }
    }
}
