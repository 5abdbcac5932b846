using Analytics.Store;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Detection.Scoring;

public static class DetectionServices
{
    /// <summary>Registers the model provider, the scorer (handing verdicts to every <see cref="IVerdictListener"/>) and its loop.</summary>
    public static IServiceCollection AddDetection(this IServiceCollection services, string node)
    {
        services.AddSectionOptions<DetectionOptions>(DetectionOptions.SectionName);
        services.AddSingleton(sp => new ModelProvider(sp.GetRequiredService<IOptions<DetectionOptions>>().Value.ResolveModelDirectory(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Detection")));
        services.AddSingleton(sp => new Scorer(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<ModelProvider>(),
            sp.GetServices<IVerdictListener>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Detection"), node));
        services.AddSingleton<ScorerService>();
        services.AddHostedService(sp => sp.GetRequiredService<ScorerService>());
        return services;
    }
}
