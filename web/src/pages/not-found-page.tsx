import { usePageHeading } from "../hooks/use-page-title.js";
import { href, navigate } from "../hooks/use-route.js";

export function NotFoundPage() {
  const heading = usePageHeading<HTMLHeadingElement>("Not found");
  return (
    <main className="page page--center" id="main">
      <div className="card empty-card">
        <h1 ref={heading} tabIndex={-1}>
          Page not found
        </h1>
        <p className="muted">There's nothing at this address.</p>
        <a
          className="button button--primary"
          href={href("/")}
          onClick={(e) => {
            e.preventDefault();
            navigate("/");
          }}
        >
          Go to People
        </a>
      </div>
    </main>
  );
}
