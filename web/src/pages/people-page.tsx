import { useSession } from "../auth/use-session.js";
import { UserList } from "../components/user-list.js";
import { UserLookup, useLookupIds } from "../components/user-lookup.js";
import { usePageHeading } from "../hooks/use-page-title.js";

/** The live directory of everyone, and a lookup by id. */
export function PeoplePage() {
  const { user } = useSession();
  const heading = usePageHeading<HTMLHeadingElement>("People");
  const lookup = useLookupIds();
  return (
    <main className="page" id="main">
      <header className="page__header">
        <div>
          <h1 ref={heading} tabIndex={-1}>
            People
          </h1>
          <p className="muted">
            Everyone on Switchboard, live. New sign-ups appear here as they happen.
          </p>
        </div>
      </header>
      <div className="people-grid">
        <UserList meId={user?.id} onLookup={lookup.add} />
        <UserLookup state={lookup} />
      </div>
    </main>
  );
}
